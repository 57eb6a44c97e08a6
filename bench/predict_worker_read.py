"""How much of the CNN prediction frame is moving the vectors through Spark: an experiment.

Two frames over the same 100,000 MNIST images (``bench/predict.py``'s data and CNN), both into
Spark's ``noop`` sink on local[2], one torch thread per Python worker, 256-row forward blocks:

- ``job``:    the frame ``spark-collab predict`` runs: the JVM reads the ``array<float>`` column and
              hands it to ``predict_batch_udf`` in Arrow batches.
- ``worker``: the JVM hands over only (file, row group, row) references, one per image; each Python
              worker reads the row groups itself with pyarrow (the torch loop's reader) and predicts.

The ``worker`` side also reports, summed over its Python workers, the seconds spent reading and in
forward passes: the forward passes are the floor of any frame on these cores.

Usage:  .venv/bin/python bench/predict_worker_read.py [--repeat 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from predict import MNIST, write_inputs, write_run  # noqa: E402

BLOCK_ROWS = 256
ROWS_PER_CALL = 4096


def row_groups(files: list[str]) -> pa.Table:
    """(file index, row group, rows) of every row group, from the Parquet footers only."""
    found: list[tuple[int, int, int]] = []
    for index, path in enumerate(files):
        meta = pq.ParquetFile(path).metadata
        found += [(index, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return pa.table({name: [g[i] for g in found] for i, name in enumerate(("file", "group", "rows"))})


def make_reader_predictor(files: list[str], run_dir: str, timings_dir: str):  # type: ignore[no-untyped-def]
    """A ``predict_batch_udf`` factory: references in; id, label, prediction, probabilities out."""

    def load():  # type: ignore[no-untyped-def]
        import torch

        from training.inference import load_classifier, probabilities_by_id

        torch.set_num_threads(1)
        classifier = load_classifier(run_dir)
        held: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        spent = {"read_s": 0.0, "forward_s": 0.0}

        def group(key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if key not in held:
                held.clear()  # a task's rows come group after group: one held group is enough
                table = pq.ParquetFile(files[key[0]]).read_row_group(
                    key[1], columns=["id", "label", "features"]
                )
                features = table.column("features").combine_chunks()
                matrix = features.flatten().to_numpy().reshape(len(features), -1)
                held[key] = (table.column("id").to_numpy(), table.column("label").to_numpy(), matrix)
            return held[key]

        def predict(file: np.ndarray, grp: np.ndarray, row: np.ndarray) -> dict[str, np.ndarray]:
            t0 = time.perf_counter()
            ids = np.empty(len(row), np.int64)
            labels = np.empty(len(row), np.int32)
            x = np.empty((len(row), 784), np.float32)
            for f, g in {(int(a), int(b)) for a, b in zip(file, grp, strict=True)}:
                take = (file == f) & (grp == g)
                group_ids, group_labels, group_x = group((f, g))
                ids[take], labels[take], x[take] = (
                    group_ids[row[take]],
                    group_labels[row[take]],
                    group_x[row[take]],
                )
            t1 = time.perf_counter()
            probs = probabilities_by_id(classifier, x, ids, BLOCK_ROWS)
            spent["read_s"] += t1 - t0
            spent["forward_s"] += time.perf_counter() - t1
            Path(timings_dir, str(os.getpid())).write_text(json.dumps(spent))
            prediction = probs.argmax(dim=1).to(torch.int32).numpy()
            return {"id": ids, "label": labels, "prediction": prediction, "probabilities": probs.numpy()}

        return predict

    return load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 10,000 MNIST test images")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not MNIST.is_dir():
        print(f"skip: {MNIST} not present", file=sys.stderr)
        return 0
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StructField, StructType

    from spark_jobs.common.session import get_spark_session
    from spark_jobs.predict import PredictOptions
    from spark_jobs.predict.images import load_model, predictions_frame, read_input

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-worker-read-"))
    data, n = write_inputs(tmp, args.repeat)
    run = write_run(tmp)
    timings = tmp / "timings"
    timings.mkdir()
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    spark = get_spark_session("bench-predict-worker-read", master="local[2]", conf=conf)
    opts = PredictOptions(run=str(run), input=str(data), output=str(tmp / "out"), batch_size=BLOCK_ROWS)
    classifier = load_model(opts)
    files = sorted(str(p) for p in data.glob("*.parquet"))
    groups = row_groups(files)
    out_type = StructType(
        [
            StructField("id", LongType()),
            StructField("label", IntegerType()),
            StructField("prediction", IntegerType()),
            StructField("probabilities", ArrayType(FloatType())),
        ]
    )
    reader_udf = predict_batch_udf(
        make_reader_predictor(files, str(run), str(timings)), return_type=out_type, batch_size=ROWS_PER_CALL
    )

    def job_frame() -> None:
        df, cols = read_input(spark, opts, classifier.feature_dim)
        predictions_frame(df, cols, opts, classifier, 1).write.format("noop").mode("overwrite").save()

    def worker_frame() -> None:
        # One partition per row group, so that no group is read by two tasks.
        refs = spark.createDataFrame(groups).repartition(groups.num_rows)
        refs = refs.select("file", "group", F.explode(F.sequence(F.lit(0), F.col("rows") - 1)).alias("row"))
        scored = refs.select(reader_udf("file", "group", "row").alias("out")).select("out.*")
        scored.write.format("noop").mode("overwrite").save()

    job_frame()
    worker_frame()  # warm-up: both Python workers started, models loaded
    best = {"job": float("inf"), "worker": float("inf")}
    # Each worker's seconds so far: its predictor (cached by pyspark across jobs) keeps counting.
    totals = {p.name: json.loads(p.read_text()) for p in timings.iterdir()}
    for round_ in range(1, args.rounds + 1):
        for name, frame in (("job", job_frame), ("worker", worker_frame)):
            t = time.perf_counter()
            frame()
            took = time.perf_counter() - t
            best[name] = min(best[name], took)
            note = ""
            if name == "worker":
                now = {p.name: json.loads(p.read_text()) for p in timings.iterdir()}
                note = "; per worker " + ", ".join(
                    f"read {s['read_s'] - totals.get(pid, {}).get('read_s', 0.0):.2f}s "
                    f"forward {s['forward_s'] - totals.get(pid, {}).get('forward_s', 0.0):.2f}s"
                    for pid, s in sorted(now.items())
                )
                totals = now
            print(f"  (round {round_}: {name} {took:.2f}s{note})", flush=True)
    spark.stop()
    print(f"{n} MNIST images, CNN, {len(files)} files, {groups.num_rows} row groups, local[2], noop sink")
    for name, seconds in best.items():
        print(f"  {name:<7} {seconds:6.2f}s  {n / seconds:>9.0f} rows/s")
    print(f"  worker / job: {best['job'] / best['worker']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
