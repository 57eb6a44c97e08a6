"""Collaborative-training comparison: paired arms over several seeds, reported as ratios.

Runs ``spark-collab collab --compare`` (independent vs DML peers; FedAvg on IID, pathological:2
and dirichlet:0.1 shards; centralized training on the union) and prints, next to the per-arm
mean and spread, the ratios that the literature makes claims about, all measured in this run:

- DML / independent: peer disagreement and mean pairwise KL (expected well below 1), mean peer
  accuracy (expected close to 1);
- ensemble gain (ensemble accuracy - mean peer accuracy; expected >= 0);
- FedAvg non-IID / IID global accuracy at a fixed round (expected below 1), and IID / centralized.

Usage::

    .venv/bin/python bench/collab.py                      # digits, 3 seeds, 4 clients on 2 ranks
    .venv/bin/python bench/collab.py --source mnist5k --seeds 3 --output runs/bench/collab-mnist5k
    .venv/bin/python bench/collab.py --set collab.rounds=20 --set train.epochs=20
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _ratio(a: float, b: float) -> str:
    return "n/a" if not b else f"{a / b:.3f}"


def report(doc: dict) -> str:
    s = doc["summary"]
    dml_arm = next(a for a in s if a.startswith("dml("))
    ind, dml = s["independent"], s[dml_arm]
    at = f"acc@{doc['at_round']}"
    lines = [
        f"# {doc['source']}, {doc['seeds']} seeds, {doc['clients']} clients; wall {doc['timings']['wall_s']:.0f}s "
        f"on {platform.node()} ({platform.processor() or platform.machine()})",
        f"DML / independent  disagreement {_ratio(dml['disagreement']['mean'], ind['disagreement']['mean'])}  "
        f"pairwise KL {_ratio(dml['pairwise_kl']['mean'], ind['pairwise_kl']['mean'])}  "
        f"mean peer acc {_ratio(dml['mean_peer_acc']['mean'], ind['mean_peer_acc']['mean'])}",
        f"ensemble gain (acc points)  independent {ind['ensemble_gain']['mean'] * 100:+.2f}  "
        f"DML {dml['ensemble_gain']['mean'] * 100:+.2f}",
    ]
    iid = s["fedavg-iid"]
    for arm in ("fedavg-pathological", "fedavg-dirichlet0.1"):
        lines.append(
            f"{arm} / fedavg-iid  final acc {_ratio(s[arm]['acc']['mean'], iid['acc']['mean'])}"
            + (f"  {at} {_ratio(s[arm][at]['mean'], iid[at]['mean'])}" if at in iid else "")
        )
    lines.append(
        f"fedavg-iid / centralized  final acc {_ratio(iid['acc']['mean'], s['centralized']['acc']['mean'])}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--at-round", type=int, default=3)
    parser.add_argument("--output", default="runs/bench/collab")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()

    from spark_jobs.collab import main as collab

    argv = [
        "--compare", "--source", args.source, "--seeds", str(args.seeds), "--clients", str(args.clients),
        "--at-round", str(args.at_round), "--output", args.output, "--overwrite",
    ]  # fmt: skip
    for item in args.set:
        argv += ["--set", item]
    t0 = time.perf_counter()
    code = collab(argv)
    if code:
        return code
    doc = json.loads((Path(args.output) / "compare.json").read_text())
    print()
    print(report(doc))
    print(f"total {time.perf_counter() - t0:.0f}s; details in {Path(args.output).absolute()}/compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
