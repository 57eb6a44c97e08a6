"""Restart and checkpoint benchmarks, as ratios to peers run here.

1. Recovery: seconds from a rank's death (``fault.mode=kill``: SIGKILL of rank 1's own process at a
   step, time stamped by the rank just before) to the first optimizer step of the relaunched run,
   for ``spark-collab train --set launch.max_restarts=1`` (driver-side restart: stop, diagnose,
   relaunch through TorchDistributor, resume from the last checkpoint) against a bare
   ``torchrun --max-restarts=1 -m training.loop`` with the same config and the same fault (its
   agent restarts the workers, which resume from the same checkpoints).
2. Checkpoint cost: mean optimizer-step time of ``training.loop.train`` (one process) with a
   checkpoint every N steps against none at all inside the epoch, as a percentage of step time;
   with ``--gpt-corpus`` also for the GPT CPU config (``conf/train/gpt_char.toml``, one process,
   ``--gpt-iters`` iterations, checkpoints every N iterations against none until the end).

Usage::

    spark-collab shard --source mnist5k --output runs/shards/mnist5k --shards 2   # once
    python bench/restarts.py [--shards runs/shards/mnist5k] [--repeats 2]
    spark-collab corpus ../shared/data/tinyshakespeare/input.txt --output runs/corpus/shakespeare_char --tokenizer char
    python bench/restarts.py --skip-recovery --skip-classifier --gpt-corpus runs/corpus/shakespeare_char
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAULT_LINE = re.compile(r"fault injection: rank \d+ at step \d+ \(attempt 1, unix ([0-9.]+)\)")
CONFIG = REPO / "conf" / "train" / "mlp784.toml"


def common_sets(shards: Path, run_dir: Path, fail_at: int) -> list[str]:
    return [
        f"data.shards='{shards}'",
        f"run.dir='{run_dir}'",
        "train.epochs=2",
        "run.checkpoint_every=10",
        "run.plots=false",
        "fault.fail_rank=1",
        f"fault.fail_at_step={fail_at}",
        "fault.mode=kill",
    ]


def recovery_seconds(output: str, run_dir: Path) -> float:
    """Death (stamped by the rank) to the first step of the final attempt (from result.json)."""
    match = FAULT_LINE.search(output)
    if match is None:
        raise RuntimeError(f"no fault line in the output:\n{output[-3000:]}")
    first_step = json.loads((run_dir / "result.json").read_text())["timings"]["first_step_unix"]
    return first_step - float(match.group(1))


def run_ours(shards: Path, work: Path, fail_at: int) -> float:
    run_dir = work / "ours"
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [*common_sets(shards, run_dir, fail_at), "launch.max_restarts=1"]
    argv = [sys.executable, "-m", "spark_jobs", "train", "--config", str(CONFIG)]
    argv += [x for s in sets for x in ("--set", s)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return recovery_seconds(proc.stdout + proc.stderr, run_dir)


def run_torchrun(shards: Path, work: Path, fail_at: int) -> float:
    run_dir = work / "torchrun"
    shutil.rmtree(run_dir, ignore_errors=True)
    # Every attempt resumes when a checkpoint exists, as the driver makes a restarted attempt do.
    sets = [*common_sets(shards, run_dir, fail_at), "run.resume=true"]
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    argv += ["--max-restarts=1", "-m", "training.loop", "--config", str(CONFIG)]
    argv += [x for s in sets for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return recovery_seconds(proc.stdout + proc.stderr, run_dir)


def step_time(shards: Path, work: Path, every: int, epochs: int) -> float:
    """Mean seconds per optimizer step of an in-process run (epoch times include checkpoints)."""
    import torch

    from training.config import load_config
    from training.loop import train

    torch.set_num_threads(1)
    run_dir = work / f"every-{every}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(
        CONFIG,
        [
            f"data.shards='{shards}'",
            f"run.dir='{run_dir}'",
            "launch.num_processes=1",
            f"train.epochs={epochs}",
            f"run.checkpoint_every={every}",
            "run.plots=false",
        ],
    )
    result = train(cfg)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = result["steps"] // epochs
    # The first epoch warms up; evaluation runs after the epoch timer stops.
    return statistics.mean(r["epoch_time_s"] for r in lines[1:]) / steps_per_epoch


def gpt_iteration_time(corpus: Path, work: Path, every: int, iters: int) -> float:
    """Seconds per GPT iteration from the first step to the end (one final evaluation included)."""
    import torch

    from training.config import load_config
    from training.lm_loop import train

    torch.set_num_threads(1)
    run_dir = work / f"gpt-every-{every}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(
        REPO / "conf" / "train" / "gpt_char.toml",
        [
            f"data.shards='{corpus}'",
            f"run.dir='{run_dir}'",
            "launch.num_processes=1",
            f"train.max_iters={iters}",
            f"train.eval_interval={iters}",
            "train.eval_iters=2",
            f"train.log_interval={iters}",
            f"run.checkpoint_every={every}",
            "run.plots=false",
        ],
    )
    timings = train(cfg)["timings"]
    return (timings["end_unix"] - timings["first_step_unix"]) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=REPO / "runs" / "shards" / "mnist5k")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fail-at", type=int, default=25, help="step at which rank 1 is killed")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--skip-classifier", action="store_true", help="no classifier checkpoint-cost runs")
    parser.add_argument("--gpt-corpus", type=Path, default=None, help="char token shards for the GPT config")
    parser.add_argument("--gpt-iters", type=int, default=200)
    args = parser.parse_args()
    shards = args.shards.absolute()
    work = Path(tempfile.mkdtemp(prefix="bench-restarts-"))
    try:
        if not args.skip_recovery:
            ours, bare = [], []
            for _ in range(args.repeats):  # alternate: the machine is shared and noisy
                ours.append(run_ours(shards, work, args.fail_at))
                bare.append(run_torchrun(shards, work, args.fail_at))
            mo, mb = statistics.median(ours), statistics.median(bare)
            print(f"death -> training again: spark-collab {mo:.2f}s {ours}, torchrun {mb:.2f}s {bare}")
            print(f"  ratio spark-collab / torchrun --max-restarts: {mo / mb:.2f}x")
        if not args.skip_classifier:
            base = statistics.median(step_time(shards, work, 0, 3) for _ in range(args.repeats))
            print(f"step time without step checkpoints: {base * 1e3:.3f} ms")
            for every in args.every:
                t = statistics.median(step_time(shards, work, every, 3) for _ in range(args.repeats))
                print(
                    f"  checkpoint every {every:>4} steps: {t * 1e3:.3f} ms/step, "
                    f"overhead {100 * (t / base - 1):+.1f}%"
                )
        if args.gpt_corpus is not None:
            corpus = args.gpt_corpus.absolute()
            runs: dict[int, list[float]] = {every: [] for every in (0, *args.every)}
            for _ in range(args.repeats):  # alternate the settings inside each repeat
                for every in runs:
                    runs[every].append(gpt_iteration_time(corpus, work, every, args.gpt_iters))
            base = statistics.median(runs[0])
            print(
                f"GPT (gpt_char, 1 process) iteration time without step checkpoints: {base * 1e3:.1f} ms {runs[0]}"
            )
            for every in args.every:
                t = statistics.median(runs[every])
                print(
                    f"  checkpoint every {every:>4} iterations: {t * 1e3:.1f} ms/iter, "
                    f"overhead {100 * (t / base - 1):+.1f}% {runs[every]}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
