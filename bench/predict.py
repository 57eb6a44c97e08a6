"""Inference throughput: ``spark-collab predict`` on local[2] against a single-process torch loop.

One run, the same data and the same CNN (LeNet, random weights: throughput does not depend on
them) for every contender; rows per second, and the ratios against the torch loop:

- ``torch``:  one Python process, torch using every core through its own threads (the most one
              machine gives): read the Parquet files with pyarrow, then batches of ``--batch-size``
              through the model. Reported with and without the read.
- ``spark``:  :func:`spark_jobs.predict.predict` on local[2] (``predict_batch_udf``, model loaded once
              per Python worker, one torch thread per worker), Parquet output plus the report.
- ``spark_noop``: the same prediction frame written to Spark's ``noop`` sink (no output files,
              no report): the cost of the prediction itself.
- ``naive``:  a plain ``pandas_udf`` that loads the model in every batch (same batch size,
              ``noop`` sink).
- fixed cost: the Spark job on ``--small`` rows, once per round with the Python workers up (best
  round); the size below which Spark's overhead dominates is where that fixed cost equals the time
  to predict the rows. The session's first job, which also starts a Python worker, is printed
  apart.

Every contender runs once per round (``--rounds``, default 2) in the same order, and keeps its best
round: the machines these run on are noisy, and the first round's Spark job also pays the one-off
start of the session's second Python worker (printed per round).

Data: the real MNIST test set (``../shared/data/mnist/t10k``) repeated ``--repeat`` times
(10 x 10,000 = 100,000 images), written as 8 Parquet files with ids 0..N-1.

Usage:  .venv/bin/python bench/predict.py [--repeat 10] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from training.config import load_config  # noqa: E402
from training.models import build_model  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist"
FILES = 8


def write_inputs(out: Path, repeat: int) -> tuple[Path, int]:
    from spark_jobs.shard.sources import load_idx

    images, labels = load_idx(MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz")
    x = np.tile((images.reshape(len(images), -1) / 255.0).astype(np.float32), (repeat, 1))
    y = np.tile(labels.astype(np.int32), repeat)
    n = len(y)
    data = out / f"mnist-x{repeat}"
    data.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(n), FILES)):
        flat = pa.array(x[part].reshape(-1))
        features = pa.FixedSizeListArray.from_arrays(flat, 784).cast(pa.list_(pa.float32()))
        table = pa.table(
            {"id": pa.array(part.astype(np.int64)), "label": pa.array(y[part]), "features": features}
        )
        pq.write_table(table, data / f"part-{i:05d}.parquet")
    return data, n


def write_run(out: Path) -> Path:
    """A train run directory (result.json + checkpoint.pt) holding a LeNet for 28x28 digits."""
    run = out / "cnn-run"
    run.mkdir()
    cfg = load_config(None, ["model.name='cnn'"])
    torch.manual_seed(0)
    model = build_model("cnn", (28, 28), 10, cfg.model)
    torch.save({"model": model.state_dict()}, run / "checkpoint.pt")
    doc = {"model": "cnn", "config": cfg.to_dict(), "feature_shape": [28, 28], "num_classes": 10}
    (run / "result.json").write_text(json.dumps(doc))
    return run


def torch_loop(data: Path, run: Path, batch_size: int) -> dict[str, float]:
    """The single-process reference: torch with every core, reading the same Parquet files."""
    from training.inference import load_classifier

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    classifier = load_classifier(run)
    tables = [pq.read_table(p) for p in sorted(data.glob("*.parquet"))]
    table = pa.concat_tables(tables)
    flat = table.column("features").combine_chunks().flatten().to_numpy()
    x = torch.from_numpy(flat.reshape(table.num_rows, -1))
    t1 = time.perf_counter()
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(classifier.probabilities(x[i : i + batch_size]).argmax(dim=1))
    torch.cat(preds)
    t2 = time.perf_counter()
    return {"total_s": t2 - t0, "compute_s": t2 - t1}


def naive_frame(spark, data: Path, run: Path, batch_size: int):  # type: ignore[no-untyped-def]
    """A pandas_udf that reads the model from the run directory for every Arrow batch."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    run_dir = str(run)

    @pandas_udf("int")
    def naive(features: pd.Series) -> pd.Series:
        import torch as t

        from training.inference import load_classifier

        t.set_num_threads(1)
        classifier = load_classifier(run_dir)
        x = t.from_numpy(np.vstack(features.to_numpy()).astype(np.float32))
        return pd.Series(classifier.probabilities(x).argmax(dim=1).numpy().astype(np.int32))

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    return spark.read.parquet(str(data)).select("id", naive(F.col("features")).alias("prediction"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 10,000 MNIST test images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--small", type=int, default=1000, help="rows of the fixed-cost run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of every contender; each keeps its best"
    )
    args = parser.parse_args()
    if not MNIST.is_dir():
        print(f"skip: {MNIST} not present", file=sys.stderr)
        return 0
    from spark_jobs.common.session import get_spark_session
    from spark_jobs.predict import PredictOptions, predict
    from spark_jobs.predict.images import load_model, predictions_frame, read_input

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    data, n = write_inputs(tmp, args.repeat)
    small, _ = write_inputs(tmp / "small", 1)
    small_table = pq.read_table(small).slice(0, args.small)
    small_dir = tmp / "small-rows"
    small_dir.mkdir()
    pq.write_table(small_table, small_dir / "part-00000.parquet")
    run = write_run(tmp)

    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2",
    }
    spark = get_spark_session("bench-predict", master="local[2]", conf=conf)
    opts = PredictOptions(run=str(run), input=str(data), output=str(tmp / "out"), batch_size=args.batch_size)
    classifier = load_model(opts)
    parts = spark.read.parquet(str(data)).rdd.getNumPartitions()

    def small_job(name: str) -> None:
        predict(
            spark, PredictOptions(**{**opts.__dict__, "input": str(small_dir), "output": str(tmp / name)})
        )

    # The session's first job starts a Python worker (torch import, model load): the cost a
    # one-job command pays on top of the warm fixed cost measured in the rounds.
    t = time.perf_counter()
    small_job("cold")
    cold_s = time.perf_counter() - t
    print(f"  (first job of the session, {len(small_table)} rows: {cold_s:.2f}s)", flush=True)

    def spark_job(round_: int) -> None:
        predict(spark, PredictOptions(**{**opts.__dict__, "output": str(tmp / f"out-{round_}")}))

    def spark_small(round_: int) -> None:
        small_job(f"small-{round_}")

    def spark_noop(_: int) -> None:
        df, cols = read_input(spark, opts, classifier.feature_dim)
        predictions_frame(df, cols, opts, classifier, 1).write.format("noop").mode("overwrite").save()

    def naive(_: int) -> None:
        naive_frame(spark, data, run, args.batch_size).write.format("noop").mode("overwrite").save()

    # Every contender runs in each round, in the same order; each keeps its best round. The first
    # round's Spark job also starts the second Python worker (torch import, model load), a one-off
    # cost of the session's first job on the full data, printed but not kept.
    best: dict[str, float] = {}
    torch_compute = float("inf")
    for round_ in range(1, args.rounds + 1):
        ref = torch_loop(data, run, args.batch_size)
        torch_compute = min(torch_compute, ref["compute_s"])
        times = {"torch_total": ref["total_s"]}
        contenders = (
            ("spark", spark_job),
            ("spark_noop", spark_noop),
            ("naive", naive),
            ("small", spark_small),
        )
        for name, contender in contenders:
            t = time.perf_counter()
            contender(round_)
            times[name] = time.perf_counter() - t
        print(f"  (round {round_}: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()) + ")", flush=True)
        best = {k: min(v, best.get(k, float("inf"))) for k, v in times.items()}
    spark.stop()
    spark_s, fixed_s = best["spark"], best.pop("small")

    rate = {
        "torch_total": n / best["torch_total"],
        "torch_compute": n / torch_compute,
        "spark": n / spark_s,
        "spark_noop": n / best["spark_noop"],
        "naive": n / best["naive"],
    }
    spark_rate = n / max(spark_s - fixed_s, 1e-9)
    crossover = fixed_s * spark_rate
    print(
        f"{n} MNIST images (t10k x{args.repeat}), CNN, batch {args.batch_size}, {parts} input partitions; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    for name, r in rate.items():
        print(f"  {name:<14} {r:>9.0f} rows/s   {r / rate['torch_total']:.2f}x torch_total")
    print(f"  spark / naive pandas_udf: {rate['spark_noop'] / rate['naive']:.2f}x (both noop sink)")
    print(
        f"  fixed cost (job on {len(small_table)} rows, workers up): {fixed_s:.2f}s; Spark's overhead "
        f"dominates below ~{crossover:,.0f} rows (fixed cost x rows/s after it); the session's first job "
        f"took {cold_s:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
