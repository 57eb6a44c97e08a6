"""Inference scaling on a standalone cluster: ``spark-collab predict`` with 1 worker against 2.

A Spark standalone cluster on this machine (``scripts/cluster.sh``): one master, two workers of
one core each. The same data and CNN as ``bench/predict.py``; one application is given one
executor (``spark.cores.max=1``), the next two, each executor one core with torch held to one
thread. Rows per second of the whole job (Parquet output plus report) and of its prediction frame
alone (``noop`` sink), and the ratio 2 workers / 1 worker.

The driver runs on the same machine as both workers, so on a 2-core machine it competes with them
for the cores: the ratio is a lower bound of what two separate machines would give.

Usage:  .venv/bin/python bench/predict_cluster.py [--repeat 5] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from predict import MNIST, write_inputs, write_run  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_env(directory: Path, master_port: int, webui_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CLUSTER_DIR": str(directory),
        "CLUSTER_MASTER_PORT": str(master_port),
        "CLUSTER_WEBUI_PORT": str(webui_port),
        "CLUSTER_WORKER_WEBUI_PORT": "0",
        "CLUSTER_WORKERS": "2",
        "CLUSTER_WORKER_CORES": "1",
        "CLUSTER_WORKER_MEMORY": "2g",
        "PYTHON": sys.executable,
    }


def session(master: str, executors: int):  # type: ignore[no-untyped-def]
    """An application holding ``executors`` one-core executors, started and registered."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(master)
        .appName(f"bench-predict-{executors}-workers")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executor.cores", "1")
        .config("spark.task.cpus", "1")
        .config("spark.cores.max", str(executors))
        .config("spark.executor.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    deadline = time.monotonic() + 120
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1 < executors:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{executors} executors did not register within 120 s")
        time.sleep(0.5)
    return spark


def measure(master: str, executors: int, data: Path, small: Path, run: Path, tmp: Path, batch: int) -> dict:
    from spark_jobs.predict import PredictOptions, predict
    from spark_jobs.predict.images import load_model, predictions_frame, read_input

    spark = session(master, executors)
    try:
        base = PredictOptions(run=str(run), input=str(data), output="", batch_size=batch)
        warm = {**base.__dict__, "input": str(small), "output": str(tmp / f"warm-{executors}")}
        predict(spark, PredictOptions(**warm))  # Python workers started, model loaded, JIT warm
        t = time.perf_counter()
        summary = predict(spark, PredictOptions(**{**base.__dict__, "output": str(tmp / f"out-{executors}")}))
        job_s = time.perf_counter() - t
        classifier = load_model(base)
        t = time.perf_counter()
        df, cols = read_input(spark, base, classifier.feature_dim)
        predictions_frame(df, cols, base, classifier, 1).write.format("noop").mode("overwrite").save()
        noop_s = time.perf_counter() - t
    finally:
        spark.stop()
    return {"rows": summary.rows, "job_s": job_s, "noop_s": noop_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="copies of the 10,000 MNIST test images")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if not MNIST.is_dir():
        print(f"skip: {MNIST} not present", file=sys.stderr)
        return 0
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-cluster-"))
    data, n = write_inputs(tmp, args.repeat)
    small, _ = write_inputs(tmp / "small", 1)
    run = write_run(tmp)
    master_port, webui_port = free_port(), free_port()
    env = cluster_env(tmp / "cluster", master_port, webui_port)
    script = ["bash", str(ROOT / "scripts" / "cluster.sh")]
    subprocess.run([*script, "up"], env=env, check=True, cwd=ROOT, capture_output=True)
    master = f"spark://127.0.0.1:{master_port}"
    try:
        results = {k: measure(master, k, data, small, run, tmp, args.batch_size) for k in (1, 2)}
    finally:
        subprocess.run([*script, "down"], env=env, cwd=ROOT, capture_output=True)
    print(
        f"{n} MNIST images (t10k x{args.repeat}), CNN, batch {args.batch_size}, input partitions as read; "
        f"standalone cluster, workers of 1 core, torch 1 thread; {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}"
    )
    for k, r in results.items():
        print(
            f"  {k} worker{'s' if k > 1 else ' '}  job {n / r['job_s']:>7.0f} rows/s ({r['job_s']:.1f} s)   "
            f"frame (noop) {n / r['noop_s']:>7.0f} rows/s ({r['noop_s']:.1f} s)"
        )
    one, two = results[1], results[2]
    print(
        f"  2 workers / 1 worker: job {one['job_s'] / two['job_s']:.2f}x, frame {one['noop_s'] / two['noop_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
