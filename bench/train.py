"""Training benchmarks: loop throughput and launch overhead, as ratios to peers run here.

1. Loop: samples/s of ``training.loop.train`` at world size 1 (in-process) against a plain
   single-process PyTorch loop with the same model, global batch, optimizer, time decay and
   in-memory data; best epoch (after the first) of the best repeat for each. Target: ours at most
   10% slower (ratio >= 0.90).
2. Launch: seconds from the launch call to the start of the rank function (and to its process
   group being ready, which both pay), for
   ``spark_jobs.launch.launch`` (warm SparkSession, TorchDistributor local mode) against a bare
   ``torchrun`` of the same trivial function (``bench/trivial_rank.py``; 2 ranks each; both join a
   gloo process group), with plain ``TorchDistributor.run`` of it as a third peer.
   Target: within 1.3x.
3. Train command: seconds from starting ``spark-collab train`` (cold: JVM, Spark session, launch,
   data, model) to the first optimizer step, against ``torchrun -m training.loop`` with the same
   config (no Spark).

Usage::

    spark-collab shard --source mnist5k --output runs/shards/mnist5k --shards 2   # once
    python bench/train.py [--shards runs/shards/mnist5k] [--repeats 3] [--skip-launch]

Peers alternate within each repeat and medians are reported: the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.config import load_config  # noqa: E402
from training.data import load_shard  # noqa: E402
from training.loop import train  # noqa: E402
from training.models import build_model  # noqa: E402
from training.optim import build_optimizer  # noqa: E402

BENCH = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------- loop


def plain_loop(shards: str, model_name: str, batch: int, epochs: int, seed: int = 0) -> tuple[float, float]:
    """Textbook single-process loop; samples/s over epochs 2..N (epoch 1 warms up)."""
    data = load_shard(shards, "train")
    torch.manual_seed(seed)
    model = build_model(model_name, data.feature_shape, data.num_classes)
    cfg = load_config(None, [f"model.name={model_name}"]).optim
    opt, sched = build_optimizer(model.parameters(), cfg)
    x_all, y_all = data.features, data.labels
    n = len(data) - len(data) % batch
    rates, cpu_rates = [], []
    g = torch.Generator().manual_seed(seed)
    for _epoch in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        order = torch.randperm(len(data), generator=g)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            x, y = x_all[idx], y_all[idx]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.process_time() - c0))
    return max(rates[1:]), max(cpu_rates[1:])


def our_loop(shards: str, model_name: str, batch: int, epochs: int, run_dir: Path) -> tuple[float, float]:
    cfg = load_config(
        None,
        [
            f"data.shards='{shards}'",
            f"model.name={model_name}",
            f"train.batch_size={batch}",
            f"train.epochs={epochs}",
            "launch.num_processes=1",
            f"run.dir='{run_dir}'",
            "run.plots=false",
        ],
    )
    records = []
    result = train(cfg)
    with open(run_dir / "metrics.jsonl") as fh:
        records = [json.loads(line) for line in fh]
    assert result["world_size"] == 1
    # samples_per_s counts all ranks' samples; at world size 1 that is this process's.
    n = records[0]["samples_per_s"] * records[0]["epoch_time_s"]
    return max(r["samples_per_s"] for r in records[1:]), max(n / r["cpu_time_s"] for r in records[1:])


def bench_loop(shards: str, repeats: int, epochs: int, tmp: Path) -> list[dict[str, object]]:
    rows = []
    # Short epochs (mlp784: ~20 ms) need many samples for the best-of to settle.
    for model_name, scale in (("mlp784", 4), ("mlp", 2), ("cnn", 1)):
        ours, plain = [], []
        for i in range(repeats):
            plain.append(plain_loop(shards, model_name, 128, epochs * scale))
            ours.append(our_loop(shards, model_name, 128, epochs * scale, tmp / f"loop-{model_name}-{i}"))
        # Best of the repeats: on a shared machine noise only ever makes a run slower. CPU-time
        # rates (samples per CPU second, one thread) barely move when other jobs steal the cores.
        o, p = max(x[0] for x in ours), max(x[0] for x in plain)
        oc, pc = max(x[1] for x in ours), max(x[1] for x in plain)
        rows.append(
            {
                "model": model_name,
                "ours_samples_s": o,
                "plain_samples_s": p,
                "ratio_wall": o / p,
                "ours_samples_cpu_s": oc,
                "plain_samples_cpu_s": pc,
                "ratio_cpu": oc / pc,
            }
        )
        print(
            f"loop  {model_name:<9} wall: ours {o:>8.0f} plain {p:>8.0f} samples/s ratio {o / p:.3f}   "
            f"cpu: ours {oc:>8.0f} plain {pc:>8.0f} samples/cpu-s ratio {oc / pc:.3f}"
        )
    return rows


# ----------------------------------------------------------------------------------- launch


def bare_torchrun_trivial(tmp: Path) -> tuple[float, float]:
    script = BENCH / "trivial_rank.py"
    out = tmp / "trivial.json"
    t0 = time.time()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    times = json.loads(out.read_text())
    return times["entered"] - t0, times["ready"] - t0


def launcher_trivial() -> tuple[float, float]:
    from trivial_rank import trivial

    from spark_jobs.launch import launch

    t0 = time.time()
    result = launch(trivial, None, num_processes=2, local_mode=True, timeout_s=300)
    return result["entered"] - t0, result["ready"] - t0


def torchdistributor_trivial() -> tuple[float, float]:
    """TorchDistributor.run itself, for reference (returns whichever rank wrote last)."""
    from pyspark.ml.torch.distributor import TorchDistributor
    from trivial_rank import trivial

    t0 = time.time()
    result = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(trivial, None)
    return result["entered"] - t0, result["ready"] - t0


def bench_launch(repeats: int, tmp: Path) -> dict[str, float]:
    from spark_jobs.common.session import get_spark_session

    # The ranks import trivial_rank by reference, as they would any module-level function.
    sys.path.insert(0, str(BENCH))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    spark = get_spark_session(
        "bench-train",
        master="local[2]",
        conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"},
    )
    peers: dict[str, list[tuple[float, float]]] = {"launcher": [], "bare": [], "td": []}
    run = {
        "launcher": launcher_trivial,
        "bare": lambda: bare_torchrun_trivial(tmp),
        "td": torchdistributor_trivial,
    }
    try:
        launcher_trivial()  # first launch pays one-off Python worker and import warm-up
        for i in range(repeats):
            order = list(peers)
            for name in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
                peers[name].append(run[name]())
    finally:
        spark.stop()
    out: dict[str, float] = {}
    for i, what in enumerate(("entry", "group_ready")):
        med = {name: statistics.median(x[i] for x in times) for name, times in peers.items()}
        b = med["bare"]
        print(
            f"launch  launcher {med['launcher']:.2f}s   bare torchrun {b:.2f}s   ratio {med['launcher'] / b:.2f}"
            f"   | TorchDistributor.run {med['td']:.2f}s  ratio {med['td'] / b:.2f}   (to function {what})"
        )
        out.update(
            {
                f"launcher_{what}_s": med["launcher"],
                f"torchrun_{what}_s": b,
                f"torchdistributor_{what}_s": med["td"],
                f"ratio_{what}": med["launcher"] / b,
                f"td_ratio_{what}": med["td"] / b,
            }
        )
    return out


def _seconds_to_first_step(command: list[str], run_dir: Path, shards: str) -> float:
    """Run ``command`` (a training run of one epoch into ``run_dir``); seconds from its start to the
    first optimizer step, as its result.json records."""
    overrides = [
        "--set",
        f"data.shards='{shards}'",
        "--set",
        f"run.dir='{run_dir}'",
        "--set",
        "train.epochs=1",
    ]
    t0 = time.time()
    subprocess.run([*command, *overrides], check=True, capture_output=True, cwd=REPO)
    return json.loads((run_dir / "result.json").read_text())["timings"]["first_step_unix"] - t0


def first_step_cli(shards: str, tmp: Path, i: int) -> float:
    command = [
        sys.executable,
        "-m",
        "spark_jobs",
        "train",
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
    ]
    return _seconds_to_first_step(command, tmp / f"cli-{i}", shards)


def first_step_torchrun(shards: str, tmp: Path, i: int) -> float:
    command = [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training.loop",
        "--config",
        str(REPO / "conf" / "train" / "mlp784.toml"),
    ]
    return _seconds_to_first_step(command, tmp / f"torchrun-{i}", shards)


def bench_cli(shards: str, repeats: int, tmp: Path) -> dict[str, float]:
    cli, bare = [], []
    for i in range(repeats):
        bare.append(first_step_torchrun(shards, tmp, i))
        cli.append(first_step_cli(shards, tmp, i))
    c, b = statistics.median(cli), statistics.median(bare)
    print(
        f"train   spark-collab train {c:.2f}s   torchrun -m training.loop {b:.2f}s   ratio {c / b:.2f}   (to first step)"
    )
    return {"cli_s": c, "torchrun_s": b, "ratio": c / b}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default=str(REPO / "runs" / "shards" / "mnist5k"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="epochs per loop run for the cnn (mlp x2, mlp784 x4; the first is warm-up)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the loop peers")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-launch", action="store_true")
    parser.add_argument(
        "--skip-cli", action="store_true", help="skip the cold `spark-collab train` peer pair"
    )
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    shards = str(Path(args.shards).absolute())
    if not (Path(shards) / "manifest.json").exists():
        print(
            f"error: no shards at {shards}; run: spark-collab shard --source mnist5k --output {args.shards} --shards 2",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # One intra-op thread, as torchrun gives each rank (OMP_NUM_THREADS=1); also far less noisy
    # than two spinning OpenMP threads on a busy two-core machine.
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    out: dict[str, object] = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        if not args.skip_loop:
            out["loop"] = bench_loop(shards, args.repeats, args.epochs, tmp)
        if not args.skip_launch:
            out["launch"] = bench_launch(args.repeats, tmp)
        if not args.skip_cli:
            out["train_cli"] = bench_cli(shards, args.repeats, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
