"""Collaborative GPT training compared: DDP, DiLoCo, FedAvg, codistillation, independent peers.

Every arm trains the CPU GPT (conf/train/gpt_char.toml) on 2 ranks with the same token budget
(``--iters`` steps of the global batch: DDP's ``train.batch_size`` is the batch of its one model,
and each DiLoCo / FedAvg replica or peer, a model of its own, gets half of it as its
``train.batch_size``, so the two together read the windows DDP reads), the same seeds and the same val windows. One launch runs all
arms and seeds in a row on the same two ranks. Reported per arm: final val loss (mean and spread
over seeds), bytes sent per rank, and the ratios the goals are about, all measured in this run:

- DiLoCo H=50 against DDP: val loss ratio (goal <= 1.05) and bytes ratio DDP / DiLoCo (goal >= 40);
- DiLoCo against FedAvg at the same H (same bytes): DiLoCo lower in every seed;
- codistillation against independent peers: KL between the peers on val (goal: lower), per seed.

Usage::

    .venv/bin/python bench/lm_collab.py --iters 400 --seeds 2 --h 50,200
    .venv/bin/python bench/lm_collab.py --shards runs/corpus/shakespeare_char --iters 2000 --seeds 3
    # non-IID: each replica trains on its own book (val: the last 10 % of both)
    .venv/bin/python bench/lm_collab.py --non-iid moby-dick.txt,pride-and-prejudice.txt \
        --h 50 --seeds 1 --arms ddp,diloco-H50,fedavg-H50,independent
    # the paper's setting: every arm continues from one data-parallel model (here 500 iterations)
    .venv/bin/python bench/lm_collab.py --warm-start 500 --iters 1000 --seeds 3 \
        --arms ddp,diloco-H50,fedavg-H50,diloco-H200,fedavg-H200

Writes ``summary.json``, ``summary.txt`` and ``compare.png`` (val loss against steps and against
bytes) into ``--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANKS = 2  # every arm: DDP's ranks, or one replica / peer per rank
TINYSHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def build_shards(out: Path) -> Path:
    """tinyshakespeare as char token shards (paragraphs as documents, 10 % of them for val)."""
    if (out / "manifest.json").is_file():
        return out
    cmd = [sys.executable, "-m", "spark_jobs", "corpus", str(TINYSHAKESPEARE), "--output", str(out)]
    cmd += ["--tokenizer", "char", "--docs", "paragraph", "--val", "0.1", "--shards", "2", "--seed", "0"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def build_source_shards(files: list[Path], out: Path) -> Path:
    """Non-IID char token shards: train shard i is the first 90 % of source file i, val the last 10 % of
    every file (one document each). Written with the token-shard contract, the tokenizer beside them."""
    import numpy as np

    from contracts.manifest import Manifest
    from contracts.tokenizer import CharTokenizer
    from contracts.tokens import TOKENIZER_FILE, token_dtype_for, write_token_shard

    texts = [f.read_text(encoding="utf-8").lstrip("\ufeff").replace("\r\n", "\n") for f in files]
    tokenizer = CharTokenizer.train(texts)
    dtype = token_dtype_for(tokenizer.vocab_size)
    ids = [np.array(tokenizer.encode(t), dtype=np.int64) for t in texts]
    cuts = [int(len(a) * 0.9) for a in ids]
    train = [
        write_token_shard(out, "train", i, a[:c], np.array([c]), dtype)
        for i, (a, c) in enumerate(zip(ids, cuts, strict=True))
    ]
    tails = [a[c:] for a, c in zip(ids, cuts, strict=True)]
    val = write_token_shard(out, "val", 0, np.concatenate(tails), np.array([len(t) for t in tails]), dtype)
    Manifest(
        kind="tokens",
        splits={"train": {"shards": train}, "val": {"shards": [val]}},
        source={"files": [str(f) for f in files], "partition": "one source file per train shard"},
        extra={
            "vocab_size": tokenizer.vocab_size,
            "token_dtype": dtype,
            "tokenizer": {"kind": "char", "file": TOKENIZER_FILE, "sha256": tokenizer.sha256()},
        },
    ).write(out)
    tokenizer.save(out / TOKENIZER_FILE)
    return out


def schedule_overrides(args: argparse.Namespace, shards: Path, iters: int) -> list[str]:
    """The keys every run of the bench sets: the shards, ``iters`` iterations with their warmup and
    cosine decay, the evaluation and logging cadence, and the ranks."""
    return [
        f"data.shards='{shards}'",
        f"train.max_iters={iters}",
        f"optim.lr_decay_iters={iters}",
        f"optim.warmup_iters={min(100, iters // 10)}",
        f"train.eval_interval={args.eval_interval}",
        f"train.eval_iters={args.eval_iters}",
        f"train.log_interval={args.eval_interval}",
        f"launch.num_processes={RANKS}",
    ]


def arm_configs(args: argparse.Namespace, shards: Path, out: Path) -> dict[str, list[Any]]:
    """``{arm: [config per seed]}``; every arm shares the training and evaluation keys."""
    from training.config import load_config
    from training.lm_config import LMCollabConfig

    hs = [int(h) for h in args.h.split(",")]
    common = [*schedule_overrides(args, shards, args.iters), "run.checkpoint=false", *args.set]
    if args.warm_start:  # every arm starts from the model of one data-parallel pretraining run
        common.append(f"train.init_from='{out / 'pretrain'}'")
    collab: dict[str, LMCollabConfig | None] = {"ddp": None}
    for h in hs:
        collab[f"diloco-H{h}"] = LMCollabConfig(mode="diloco", inner_steps=h)
        collab[f"fedavg-H{h}"] = LMCollabConfig(mode="fedavg", inner_steps=h)
    collab[f"codistill-k{args.exchange_every}"] = LMCollabConfig(
        mode="dml", weight=args.kl_weight, exchange_every=args.exchange_every
    )
    collab["independent"] = LMCollabConfig(mode="independent")
    partition = "shards" if args.non_iid else "windows"
    collab = {k: dataclasses.replace(c, partition=partition) if c else c for k, c in collab.items()}
    if args.arms:
        collab = {k: c for k, c in collab.items() if k in args.arms.split(",")}
    arms: dict[str, list[Any]] = {}
    for arm, c in collab.items():
        arms[arm] = []
        for seed in range(args.seeds):
            run_dir = out / arm / f"seed-{seed}"
            cfg = load_config(
                ROOT / "conf" / "train" / "gpt_char.toml",
                [*common, f"train.seed={seed}", f"run.dir='{run_dir}'"],
            )
            if c is not None:  # train.batch_size is per model: every replica takes its share of DDP's batch
                train = dataclasses.replace(cfg.train, batch_size=cfg.train.batch_size // RANKS)
                cfg = dataclasses.replace(cfg, train=train, collab=c)
            arms[arm].append(cfg)
    return arms


def pretrain_config(args: argparse.Namespace, shards: Path, out: Path) -> Any:
    """The data-parallel run the arms start from with ``--warm-start N``: the CPU config for N
    iterations (its own warmup and cosine decay), seed 0, as DiLoCo's replicas start from a model
    pretrained with ordinary training."""
    from training.config import load_config

    overrides = schedule_overrides(args, shards, args.warm_start)
    return load_config(
        ROOT / "conf" / "train" / "gpt_char.toml",
        [*overrides, "train.seed=0", f"run.dir='{out / 'pretrain'}'", *args.set],
    )


def records(run_dir: str) -> list[dict[str, Any]]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def summarize(results: dict[str, list[dict[str, Any]]], hs: list[int]) -> dict[str, Any]:
    from training.lm_collab_report import mean_std

    table: dict[str, Any] = {}
    for arm, runs in results.items():
        val = [r["val_loss"] for r in runs]
        row = {
            "val_loss": mean_std(val),
            "val_loss_per_seed": val,
            "comm_bytes": runs[0]["comm_bytes"],
            "train_s": mean_std([r["timings"]["total_s"] for r in runs]),
        }
        if runs[0].get("peer_kl") is not None:
            row["peer_kl_per_seed"] = [r["peer_kl"] for r in runs]
            row["mean_peer_val_loss"] = mean_std([r["mean_peer_val_loss"] for r in runs])
            row["ensemble_val_loss"] = mean_std([r["ensemble_val_loss"] for r in runs])
        table[arm] = row
    goals: dict[str, Any] = {}  # each goal that the arms run (--arms) allow
    h = 50 if 50 in hs else hs[0]
    if "ddp" in table and f"diloco-H{h}" in table:
        ddp, d = table["ddp"], table[f"diloco-H{h}"]
        goals[f"diloco-H{h} val / ddp val"] = d["val_loss"][0] / ddp["val_loss"][0]
        goals[f"ddp bytes / diloco-H{h} bytes"] = ddp["comm_bytes"] / d["comm_bytes"]
    for h in hs:
        if f"diloco-H{h}" in table and f"fedavg-H{h}" in table:
            dil, fed = table[f"diloco-H{h}"]["val_loss_per_seed"], table[f"fedavg-H{h}"]["val_loss_per_seed"]
            goals[f"diloco-H{h} < fedavg-H{h} in seeds"] = (
                f"{sum(a < b for a, b in zip(dil, fed, strict=True))}/{len(dil)}"
            )
    codistill = next((a for a in table if a.startswith("codistill")), None)
    if codistill is not None and "independent" in table:
        kl_c, kl_i = table[codistill]["peer_kl_per_seed"], table["independent"]["peer_kl_per_seed"]
        goals["codistill peer KL < independent in seeds"] = (
            f"{sum(a < b for a, b in zip(kl_c, kl_i, strict=True))}/{len(kl_c)}"
        )
        goals["codistill / independent peer KL (mean)"] = (sum(kl_c) / len(kl_c)) / (sum(kl_i) / len(kl_i))
    return {"arms": table, "goals": goals}


def format_summary(doc: dict[str, Any]) -> str:
    warm = doc.get("warm_start")
    lines = [
        f"# {doc['iters']} steps x {doc['seeds']} seeds, 2 ranks; wall {doc['wall_s']:.0f}s on "
        f"{platform.machine()} ({doc['machine']})"
        + (
            f"; every arm from a DDP model of {warm['iters']} iterations (val {warm['val_loss']:.4f})"
            if warm
            else ""
        ),
        f"{'arm':<16} {'val loss (mean ± sd)':>22} {'MB sent/rank':>13} {'peer KL':>9}  per-seed val",
    ]
    for arm, row in doc["summary"]["arms"].items():
        m, s = row["val_loss"]
        kl = row.get("peer_kl_per_seed")
        kl_text = f"{sum(kl) / len(kl):9.4f}" if kl else f"{'':9}"
        seeds = " ".join(f"{v:.4f}" for v in row["val_loss_per_seed"])
        lines.append(f"{arm:<16} {m:>14.4f} ± {s:.4f} {row['comm_bytes'] / 1e6:13.1f} {kl_text}  {seeds}")
    for goal, value in doc["summary"]["goals"].items():
        lines.append(f"{goal}: {value if isinstance(value, str) else f'{value:.3f}'}")
    return "\n".join(lines)


def main() -> int:
    from spark_jobs.common.session import add_spark_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shards", default="", help="char token shards (default: built from tinyshakespeare)"
    )
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench" / "lm_collab"))
    parser.add_argument("--iters", type=int, default=400, help="steps of the global batch per arm")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--h", default="50,200", help="DiLoCo / FedAvg inner steps, comma-separated")
    parser.add_argument(
        "--exchange-every", type=int, default=50, help="codistillation: steps between exchanges"
    )
    parser.add_argument("--kl-weight", type=float, default=0.5, help="codistillation: weight of the KL term")
    parser.add_argument("--eval-interval", type=int, default=50)
    parser.add_argument("--eval-iters", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--non-iid",
        default="",
        metavar="FILE,FILE",
        help="one text file per replica: each replica trains on its own file (collab.partition = shards)",
    )
    parser.add_argument("--arms", default="", help="comma-separated subset of the arms (default: all)")
    parser.add_argument(
        "--warm-start",
        type=int,
        default=0,
        metavar="N",
        help="first train DDP for N iterations; every arm then starts from that model (train.init_from)",
    )
    add_spark_arguments(parser)
    args = parser.parse_args()
    if not (args.shards or args.non_iid) and not TINYSHAKESPEARE.is_file():
        sys.exit(f"error: {TINYSHAKESPEARE} not found; pass --shards (char token shards)")
    from spark_jobs.common.session import job_session
    from spark_jobs.launch import launch
    from training.lm_collab_report import plot_compare

    out = Path(args.output).absolute()
    if args.non_iid:
        shards = build_source_shards([Path(f) for f in args.non_iid.split(",")], out / "source_shards")
    elif args.shards:
        shards = Path(args.shards).absolute()
    else:
        shards = build_shards(ROOT / "runs" / "bench" / "shakespeare_char_paragraphs")
    arms = arm_configs(args, shards, out)
    cfgs = [cfg for group in arms.values() for cfg in group]
    # The ranks run the configs in order, so the pretraining run has finished (and written the
    # checkpoint the arms load) before the first arm starts.
    pretrain = [pretrain_config(args, shards, out)] if args.warm_start else []
    t0 = time.time()
    with job_session("bench lm_collab", args):
        flat = launch(
            "training.lm_collab:main_many",
            pretrain + cfgs,
            num_processes=RANKS,
            timeout_s=6 * 3600,
            launch_dir=out / "launch",
        )
    wall = time.time() - t0
    it = iter(flat[len(pretrain) :])
    results = {arm: [next(it) for _ in group] for arm, group in arms.items()}
    hs = [int(h) for h in args.h.split(",")]
    doc = {
        "iters": args.iters,
        "seeds": args.seeds,
        "wall_s": wall,
        "machine": "2-core x86_64 VM, 24 GiB",
        "shards": str(shards),
        "warm_start": (
            {"iters": args.warm_start, "val_loss": flat[0]["best_val_loss"], "run_dir": str(out / "pretrain")}
            if pretrain
            else None
        ),
        "args": {k: v for k, v in vars(args).items() if k not in ("conf",)},
        "summary": summarize(results, hs),
        "runs": {
            arm: [{k: v for k, v in r.items() if k != "config"} for r in rs] for arm, rs in results.items()
        },
    }
    text = format_summary(doc)
    (out / "summary.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "summary.txt").write_text(text + "\n")
    curves = {arm: [records(r["run_dir"]) for r in rs] for arm, rs in results.items()}
    plot_compare(out / "compare.png", curves, f"gpt_char, 2 ranks, {args.iters} steps, {args.seeds} seeds")
    print(text)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
