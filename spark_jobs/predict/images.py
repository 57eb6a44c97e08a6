"""``spark-collab predict`` on a classifier run (train or collab): one prediction per row.

Runs on the driver: it reads image shards from ``spark-collab shard`` (a shards dir and a split) or
any Parquet with a features column, plans a ``predict_batch_udf`` over them, and writes Parquet rows
(id, label when present, prediction, class probabilities) plus a report (accuracy, per-class
precision and recall, confusion matrix). The UDF's model code runs in Spark's Python workers and
lives in :mod:`spark_jobs.predict.worker`.

Rows whose features are null, of the wrong length, or hold a null or NaN are malformed: with
``--bad-rows null`` they are written with a null prediction and counted in the report, with their
first ids; ``--bad-rows fail`` stops the job instead (exit 2, nothing written) naming them.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.errors import JobInputError
from spark_jobs.common.output import staged_output
from spark_jobs.predict.api import PredictOptions, PredictSummary
from spark_jobs.predict.report import (
    CONFUSION_PLOT,
    PREDICTIONS_DIR,
    REPORT,
    classification_metrics,
    confusion_matrix,
    plot_confusion,
)
from spark_jobs.predict.tally import smallest_bad_ids

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from training.inference import Classifier


# Rows handed to the worker's predict function per call: several forward blocks of --batch-size, so
# that the per-call work (Arrow to numpy, placing rows in their id slots) is paid once per group of
# small forward passes rather than once per pass.
ROWS_PER_CALL = 4096


def rows_per_call(block_rows: int) -> int:
    """The whole number of ``block_rows`` blocks nearest ROWS_PER_CALL from below (at least one)."""
    return block_rows * max(1, ROWS_PER_CALL // block_rows)


def load_model(opts: PredictOptions) -> Classifier:
    """The classifier, loaded once on the driver: a wrong run, fusion or model fails here, before
    any output exists (the executors load their own copies)."""
    from training.inference import InferenceError, load_classifier, parse_fusion

    try:
        if opts.fusion is not None:
            parse_fusion(opts.fusion)
        return load_classifier(opts.run, opts.fusion)
    except InferenceError as exc:
        raise JobInputError(str(exc)) from None


# ----------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputColumns:
    """The input's column names: the features, the row ids and the labels (None: absent)."""

    features: str
    id: str | None
    label: str | None


def shard_files(opts: PredictOptions, feature_dim: int) -> list[str]:
    """The Parquet files of ``--split`` in a shards directory, checked against the model's inputs."""
    from contracts.manifest import Manifest, ManifestError

    try:
        manifest = Manifest.read(opts.input, kind="images")
        shards = manifest.shards(opts.split)
    except ManifestError as exc:
        raise JobInputError(f"--input / --split: {exc}") from None
    shape = [int(d) for d in manifest.extra.get("feature_shape", [])]
    dim = 1
    for d in shape:
        dim *= d
    if shape and dim != feature_dim:
        raise JobInputError(
            f"--input {opts.input}: features of shape {tuple(shape)} ({dim} values) but the model of --run "
            f"{opts.run} takes {feature_dim}; predict on data shaped like the training data"
        )
    files = [str(Path(opts.input) / f["path"]) for shard in shards for f in shard["files"]]
    if not files:
        raise JobInputError(f"--input {opts.input}: split {opts.split!r} has no rows; choose another --split")
    return files


def read_input(spark: SparkSession, opts: PredictOptions, feature_dim: int) -> tuple[DataFrame, InputColumns]:
    """The rows to predict and their columns; ids are generated when the input has none."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType

    is_shards = "://" not in opts.input and (Path(opts.input) / "manifest.json").is_file()
    if is_shards:
        df = spark.read.parquet(*shard_files(opts, feature_dim))
        cols = InputColumns("features", "id", "label")
    else:
        if (
            "://" not in opts.input
            and not Path(opts.input).exists()
            and not any(c in opts.input for c in "*?[")
        ):
            raise JobInputError(
                f"--input {opts.input}: no such file or directory; pass a shards dir or Parquet files"
            )
        df = spark.read.parquet(opts.input)
        names = set(df.columns)
        cols = InputColumns(
            opts.features_col,
            opts.id_col if opts.id_col in names else None,
            opts.label_col if opts.label_col in names else None,
        )
        if opts.features_col not in names:
            raise JobInputError(
                f"--features-col {opts.features_col}: no such column in --input {opts.input} "
                f"(columns: {', '.join(df.columns)}); name the array column of features"
            )
    dtype = df.schema[cols.features].dataType
    if not (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, NumericType)):
        raise JobInputError(
            f"--features-col {cols.features}: type {dtype.simpleString()}, expected an array of numbers"
        )
    first = df.where(F.col(cols.features).isNotNull()).select(F.size(cols.features)).first()
    if first is not None and first[0] != feature_dim:
        raise JobInputError(
            f"--input {opts.input}: feature vectors of length {first[0]} but the model of --run {opts.run} "
            f"takes {feature_dim}; predict on data shaped like the training data"
        )
    if cols.id is None:
        df = df.withColumn("id", F.monotonically_increasing_id())
        cols = InputColumns(cols.features, "id", cols.label)
    if opts.partitions:
        df = df.repartition(opts.partitions)
    return df, cols


def well_shaped(features: Column, feature_dim: int) -> Column:
    """Rows whose features are a vector of the model's length. Null or NaN values inside a vector are
    found by the worker instead (one vectorized check per batch there; a per-value lambda here costs
    the JVM about as much as reading the vectors)."""
    from pyspark.sql import functions as F

    return features.isNotNull() & (F.size(features) == feature_dim)


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


def ship_model_files(spark: SparkSession, run_dir: str, root: Path) -> str:
    """Ship the files a prediction reads (result.json and checkpoint.pt or peers.pt, not the run's
    older checkpoints) to every executor; returns the name ``SparkFiles.get`` finds them under.

    They are hard-linked (or copied) into a uniquely named folder under ``root``, a temporary
    directory that lives as long as the job, and zipped beside it: executors fetch the archive when
    their first task starts.
    """
    import os
    import shutil
    import uuid

    from contracts.rundir import CHECKPOINT, PEER_MODELS, RESULT

    name = f"spark-collab-model-{uuid.uuid4().hex[:12]}"
    folder = root / name
    folder.mkdir(parents=True)
    for file in (RESULT, CHECKPOINT, PEER_MODELS):
        source = Path(run_dir) / file
        if source.exists():
            try:
                os.link(source, folder / file)
            except OSError:
                shutil.copy2(source, folder / file)
    # One archive, not the folder: Spark refuses to add a local directory under a cluster master.
    # Executors fetch it once and unpack it into a directory of the same name (SparkFiles.get).
    archive = shutil.make_archive(str(folder), "zip", root_dir=folder)
    spark.sparkContext.addArchive(archive)
    return Path(archive).name


def predictions_frame(
    df: DataFrame,
    cols: InputColumns,
    opts: PredictOptions,
    classifier: Classifier,
    torch_threads: int,
    shipped_as: str | None = None,
) -> DataFrame:
    """Every input row once: id, label (when present), prediction and probabilities (null for
    malformed rows)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StructField, StructType

    from spark_jobs.predict.worker import MALFORMED, PredictSpec, make_predict_fn

    spec = PredictSpec(
        run_dir=opts.run,
        fusion=opts.fusion,
        feature_shape=classifier.feature_shape,
        num_classes=classifier.num_classes,
        block_rows=opts.classifier_batch(),
        torch_threads=torch_threads,
        load_log=opts.load_log,
        shipped_as=shipped_as,
    )
    output_type = StructType(
        [StructField("prediction", IntegerType()), StructField("probabilities", ArrayType(FloatType()))]
    )
    udf = predict_batch_udf(
        make_predict_fn(spec),
        return_type=output_type,
        batch_size=rows_per_call(opts.classifier_batch()),
        input_tensor_shapes=[None, [classifier.feature_dim]],
    )
    keep = [F.col(cols.id).cast("long").alias("id")]
    if cols.label is not None:
        keep.append(F.col(cols.label).cast("int").alias("label"))
    # One pass over the input: a row of the wrong shape gives the UDF zeros (it needs a full vector),
    # a row holding a null or NaN comes back with prediction MALFORMED (worker.make_predict_fn), and the
    # outputs of both are then nulled, instead of a second scan that would decode every vector again.
    shaped = well_shaped(F.col(cols.features), classifier.feature_dim)
    zeros = F.array_repeat(F.lit(0.0).cast("float"), classifier.feature_dim)
    features = F.when(shaped, F.col(cols.features).cast("array<float>")).otherwise(zeros)
    scored = df.select(
        *keep, shaped.alias("_shaped"), udf(F.col(cols.id).cast("long"), features).alias("out")
    )
    names = [c for c in scored.columns if c not in ("_shaped", "out")]
    ok = F.col("_shaped") & (F.col("out.prediction") != MALFORMED)
    return scored.select(
        *names,
        F.when(ok, F.col("out.prediction")).alias("prediction"),
        F.when(ok, F.col("out.probabilities")).alias("probabilities"),
    )


@dataclass(frozen=True)
class Tally:
    """What the report needs from the written predictions, read back in one small aggregate."""

    rows: int
    bad_rows: int
    bad_row_ids: list[int]
    pairs: dict[tuple[int, int], int]  # (label, prediction) -> rows, well-formed labelled rows only


def tally(spark: SparkSession, predictions: Path, has_label: bool) -> Tally:
    """Count rows, malformed rows and (label, prediction) pairs of the written predictions; the
    smallest malformed ids are looked up only when there are any."""
    written = spark.read.parquet(str(predictions))
    groups = written.groupBy(*(["label"] if has_label else []), "prediction").count().collect()
    rows = sum(int(g["count"]) for g in groups)
    bad_rows = sum(int(g["count"]) for g in groups if g["prediction"] is None)
    pairs = {
        (int(g["label"]), int(g["prediction"])): int(g["count"])
        for g in groups
        if has_label and g["label"] is not None and g["prediction"] is not None
    }
    ids = smallest_bad_ids(written, "prediction") if bad_rows else []
    return Tally(rows=rows, bad_rows=bad_rows, bad_row_ids=ids, pairs=pairs)


def write_report(
    staging: Path, opts: PredictOptions, classifier: Classifier, counts: Tally, has_label: bool
) -> dict[str, Any]:
    """report.json and confusion.png from the tally of the written predictions."""
    from contracts.atomic import write_json_atomic

    report: dict[str, Any] = {
        "run": opts.run,
        "model": classifier.description,
        "fusion": opts.fusion,
        "input": opts.input,
        "split": opts.split,
        "rows": counts.rows,
        "bad_rows": counts.bad_rows,
        "bad_row_ids": counts.bad_row_ids,
        "num_classes": classifier.num_classes,
    }
    if has_label:
        matrix = confusion_matrix(counts.pairs, classifier.num_classes)
        report.update(classification_metrics(matrix))
        report["confusion_matrix"] = matrix
        acc = report["accuracy"]
        title = f"{classifier.description}: accuracy {acc:.4f}" if acc is not None else classifier.description
        plot_confusion(matrix, staging / CONFUSION_PLOT, title)
    write_json_atomic(staging / REPORT, report)
    return report


def predict_images(
    spark: SparkSession, opts: PredictOptions, classifier: Classifier | None = None
) -> PredictSummary:
    """Predict every row of ``opts.input`` with the classifier of ``opts.run`` (``classifier``: already
    loaded by the caller). The options are checked by the caller (:func:`spark_jobs.predict.api.predict`
    or the command line)."""
    t0 = time.time()
    classifier = classifier or load_model(opts)
    torch_threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    with (
        tempfile.TemporaryDirectory(prefix="spark-collab-predict-") as ship_root,
        staged_output(opts.output, opts.overwrite, inputs=[opts.input, opts.run]) as staging,
    ):
        df, cols = read_input(spark, opts, classifier.feature_dim)
        staging.mkdir(parents=True)
        shipped_as = ship_model_files(spark, opts.run, Path(ship_root)) if opts.ship_model else None
        frame = predictions_frame(df, cols, opts, classifier, torch_threads, shipped_as)
        frame.write.parquet(str(staging / PREDICTIONS_DIR))
        has_label = cols.label is not None
        counts = tally(spark, staging / PREDICTIONS_DIR, has_label)
        if opts.bad_rows == "fail" and counts.bad_rows:
            # Raised inside the staged output: the predictions written so far are removed.
            raise JobInputError(
                f"--input {opts.input}: malformed rows (features null, not {classifier.feature_dim} values, "
                f"or holding null/NaN), ids {', '.join(map(str, counts.bad_row_ids))}; fix or drop them, or "
                "pass --bad-rows null to predict null for them"
            )
        report = write_report(staging, opts, classifier, counts, has_label)
    return PredictSummary(
        rows=report["rows"],
        bad_rows=report["bad_rows"],
        accuracy=report.get("accuracy"),
        model=classifier.description,
        output=str(Path(opts.output).absolute()),
        seconds=time.time() - t0,
    )
