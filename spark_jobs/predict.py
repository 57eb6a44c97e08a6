"""``spark-collab predict``: batch predictions of a trained classifier with ``predict_batch_udf``.

Reads image shards from ``spark-collab shard`` (a shards dir and a split) or any Parquet with a
features column, predicts every row in the executors with the model of a ``train`` or ``collab``
run (loaded once per Python worker), and writes Parquet rows (id, label when present, prediction,
class probabilities) plus a report (accuracy, per-class precision and recall, confusion matrix).

Examples::

    spark-collab predict --run runs/train/cnn --input runs/shards/mnist-t10k --output runs/predict/cnn
    spark-collab predict --run runs/collab/dml --input runs/shards/digits-iid --fusion average --output runs/predict/avg
    spark-collab predict --run runs/train/mlp --input data/rows.parquet --features-col pixels --output out/p
    spark-submit spark_jobs/predict.py --run /shared/runs/cnn --input /shared/shards/t10k --output /shared/p

Rows whose features are null, of the wrong length, or hold a null or NaN are malformed: by default
(``--bad-rows null``) they are written with a null prediction and counted in the report, with
their first ids; ``--bad-rows fail`` stops the job instead (exit 2, nothing written) naming them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.cli import HelpFormatter, absolute_path, run_cli
from spark_jobs.errors import JobInputError
from spark_jobs.output import staged_output
from spark_jobs.predict_report import (
    CONFUSION_PLOT,
    PREDICTIONS_DIR,
    REPORT,
    classification_metrics,
    confusion_matrix,
    plot_confusion,
)
from spark_jobs.session import add_spark_arguments, job_session_in_background

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from training.inference import Classifier

BAD_ROWS = ("null", "fail")
ALIGN_ROWS = 16  # training.inference.ALIGN_ROWS, repeated so that --help needs no torch import
SHOWN_BAD_IDS = 10


@dataclass(frozen=True)
class PredictOptions:
    """One prediction job; the command line maps onto it one flag per field."""

    run: str
    """Run directory of a train or collab run (result.json plus checkpoint.pt or peers.pt)."""
    input: str
    """A shards directory (manifest.json) or Parquet files/directories/globs with a features column."""
    output: str
    """Output directory: predictions/ (Parquet), report.json, confusion.png."""
    fusion: str | None = None
    """Collab runs: ensemble, average or peer:I; None: the run's own collab.fusion."""
    split: str = "test"
    """Shards input: the split to predict."""
    features_col: str = "features"
    """Parquet input: the array column of features (flattened, as many values as the model's inputs)."""
    id_col: str = "id"
    """Parquet input: the row id column (int64); absent: ids are generated (partitioning-dependent)."""
    label_col: str = "label"
    """Parquet input: the label column; absent: no accuracy in the report."""
    text_col: str = "text"
    """GPT runs, JSONL or Parquet input: the column holding each document's text."""
    batch_size: int = 1024
    """Rows per forward pass in the executors (a multiple of 16)."""
    bad_rows: str = "null"
    """Malformed rows: null (null prediction, counted and named in the report) or fail (exit 2)."""
    partitions: int = 0
    """Repartition the input into this many partitions first (0: keep the input's)."""
    overwrite: bool = False
    """Replace an existing output."""
    ship_model: bool = False
    """Ship the model files with the job (SparkContext.addFile) instead of reading --run on every executor."""
    load_log: str | None = None
    """Append each Python worker's pid to this file when it loads the model (to check the loads)."""


@dataclass
class PredictSummary:
    rows: int
    bad_rows: int
    accuracy: float | None
    model: str
    output: str
    seconds: float
    corpus_perplexity: float | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab predict",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    doc = {name: field_doc.strip() for name, field_doc in _field_docs().items()}
    parser.add_argument("--run", required=True, help=doc["run"])
    parser.add_argument("--input", required=True, help=doc["input"])
    parser.add_argument("--output", required=True, help=doc["output"])
    parser.add_argument("--fusion", default=None, help=doc["fusion"])
    parser.add_argument("--split", default="test", help=doc["split"])
    parser.add_argument("--features-col", default="features", help=doc["features_col"])
    parser.add_argument("--id-col", default="id", help=doc["id_col"])
    parser.add_argument("--label-col", default="label", help=doc["label_col"])
    parser.add_argument("--text-col", default="text", help=doc["text_col"])
    parser.add_argument("--batch-size", type=int, default=1024, help=doc["batch_size"])
    parser.add_argument("--bad-rows", choices=BAD_ROWS, default="null", help=doc["bad_rows"])
    parser.add_argument("--partitions", type=int, default=0, help=doc["partitions"])
    parser.add_argument("--overwrite", action="store_true", help=doc["overwrite"])
    parser.add_argument("--ship-model", action="store_true", help=doc["ship_model"])
    parser.add_argument("--load-log", default=None, metavar="FILE", help=doc["load_log"])
    add_spark_arguments(parser)
    return parser


def _field_docs() -> dict[str, str]:
    """Each PredictOptions field's docstring (the string literal below it), for --help."""
    import ast
    import inspect
    import itertools

    tree = ast.parse(inspect.getsource(PredictOptions))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            docs[node.target.id] = after.value.value  # type: ignore[attr-defined,union-attr]
    return docs


def options_from_args(args: argparse.Namespace) -> PredictOptions:
    opts = PredictOptions(
        run=absolute_path(args.run),
        input=args.input if "://" in args.input else absolute_path(args.input),
        output=args.output,
        fusion=args.fusion,
        split=args.split,
        features_col=args.features_col,
        id_col=args.id_col,
        label_col=args.label_col,
        text_col=args.text_col,
        batch_size=args.batch_size,
        bad_rows=args.bad_rows,
        partitions=args.partitions,
        overwrite=args.overwrite,
        ship_model=args.ship_model,
        load_log=absolute_path(args.load_log) if args.load_log else None,
    )
    check_options(opts)
    return opts


def check_options(opts: PredictOptions) -> None:
    """Flag values that need no file or Spark to check."""
    if opts.batch_size < ALIGN_ROWS or opts.batch_size % ALIGN_ROWS:
        raise JobInputError(f"--batch-size {opts.batch_size}: must be a positive multiple of {ALIGN_ROWS}")
    if opts.bad_rows not in BAD_ROWS:
        raise JobInputError(f"--bad-rows {opts.bad_rows!r}: choose {' or '.join(BAD_ROWS)}")
    if opts.partitions < 0:
        raise JobInputError(f"--partitions {opts.partitions}: must be >= 0 (0 keeps the input's)")


def is_language_model(opts: PredictOptions) -> bool:
    """Whether ``--run`` is a GPT run (scored per document) rather than a classifier run."""
    from training.inference import InferenceError, is_language_model_run

    try:
        return is_language_model_run(opts.run)
    except InferenceError as exc:
        raise JobInputError(str(exc)) from None


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


def well_formed(features: Column, feature_dim: int) -> Column:
    """Rows the model can take: a vector of the right length without nulls or NaNs."""
    from pyspark.sql import functions as F

    return (
        features.isNotNull()
        & (F.size(features) == feature_dim)
        & ~F.exists(features, lambda x: x.isNull() | F.isnan(x))
    )


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


def ship_model_files(spark: SparkSession, run_dir: str, root: Path) -> str:
    """Ship the files a prediction reads (result.json and checkpoint.pt or peers.pt, not the run's
    older checkpoints) to every executor; returns the name ``SparkFiles.get`` finds them under.

    They are hard-linked (or copied) into a uniquely named folder under ``root``, a temporary
    directory that lives as long as the job: executors fetch the folder when their first task starts.
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
    spark.sparkContext.addFile(str(folder), recursive=True)
    return name


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

    from spark_jobs.predict_worker import PredictSpec, make_predict_fn

    spec = PredictSpec(
        run_dir=opts.run,
        fusion=opts.fusion,
        feature_shape=classifier.feature_shape,
        num_classes=classifier.num_classes,
        block_rows=opts.batch_size,
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
        batch_size=opts.batch_size,
        input_tensor_shapes=[None, [classifier.feature_dim]],
    )
    keep = [F.col(cols.id).cast("long").alias("id")]
    if cols.label is not None:
        keep.append(F.col(cols.label).cast("int").alias("label"))
    ok = well_formed(F.col(cols.features), classifier.feature_dim)
    good = df.where(ok).select(
        *keep, udf(F.col(cols.id).cast("long"), F.col(cols.features).cast("array<float>")).alias("out")
    )
    good = good.select(*[c for c in good.columns if c != "out"], "out.prediction", "out.probabilities")
    bad = df.where(~ok | ok.isNull()).select(
        *keep,
        F.lit(None).cast("int").alias("prediction"),
        F.lit(None).cast("array<float>").alias("probabilities"),
    )
    return good.unionByName(bad)


def first_bad_ids(df: DataFrame, cols: InputColumns, feature_dim: int) -> list[int]:
    from pyspark.sql import functions as F

    ok = well_formed(F.col(cols.features), feature_dim)
    bad = df.where(~ok | ok.isNull()).select(F.col(cols.id).cast("long").alias("id"))
    rows = bad.orderBy("id").limit(SHOWN_BAD_IDS).collect()
    return [int(r[0]) for r in rows]


def write_report(
    spark: SparkSession, staging: Path, opts: PredictOptions, classifier: Classifier, has_label: bool
) -> dict[str, Any]:
    """report.json and confusion.png from the written predictions (read back: a small aggregate)."""
    from pyspark.sql import functions as F

    from contracts.atomic import write_json_atomic

    written = spark.read.parquet(str(staging / PREDICTIONS_DIR))
    rows = written.count()
    bad = written.where(F.col("prediction").isNull())
    bad_count = bad.count()
    report: dict[str, Any] = {
        "run": opts.run,
        "model": classifier.description,
        "fusion": opts.fusion,
        "input": opts.input,
        "split": opts.split,
        "rows": rows,
        "bad_rows": bad_count,
        "bad_row_ids": [int(r[0]) for r in bad.select("id").orderBy("id").limit(SHOWN_BAD_IDS).collect()],
        "num_classes": classifier.num_classes,
    }
    if has_label:
        pairs = (
            written.where(F.col("prediction").isNotNull()).groupBy("label", "prediction").count().collect()
        )
        counts = {
            (int(r["label"]), int(r["prediction"])): int(r["count"]) for r in pairs if r["label"] is not None
        }
        matrix = confusion_matrix(counts, classifier.num_classes)
        report.update(classification_metrics(matrix))
        report["confusion_matrix"] = matrix
        acc = report["accuracy"]
        title = f"{classifier.description}: accuracy {acc:.4f}" if acc is not None else classifier.description
        plot_confusion(matrix, staging / CONFUSION_PLOT, title)
    write_json_atomic(staging / REPORT, report)
    return report


def predict(
    spark: SparkSession, opts: PredictOptions, classifier: Classifier | None = None
) -> PredictSummary:
    """Run one prediction job on ``spark``; JobInputError (nothing written) for the user's mistakes."""
    t0 = time.time()
    check_options(opts)
    if classifier is None and is_language_model(opts):
        from spark_jobs.predict_lm import score

        return score(spark, opts)
    classifier = classifier or load_model(opts)
    torch_threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    with (
        tempfile.TemporaryDirectory(prefix="spark-collab-predict-") as ship_root,
        staged_output(opts.output, opts.overwrite, inputs=[opts.input, opts.run]) as staging,
    ):
        df, cols = read_input(spark, opts, classifier.feature_dim)
        if opts.bad_rows == "fail":
            ids = first_bad_ids(df, cols, classifier.feature_dim)
            if ids:
                raise JobInputError(
                    f"--input {opts.input}: malformed rows (features null, not {classifier.feature_dim} values, "
                    f"or holding null/NaN), ids {', '.join(map(str, ids))}; fix or drop them, or pass "
                    "--bad-rows null to predict null for them"
                )
        staging.mkdir(parents=True)
        shipped_as = ship_model_files(spark, opts.run, Path(ship_root)) if opts.ship_model else None
        frame = predictions_frame(df, cols, opts, classifier, torch_threads, shipped_as)
        frame.write.parquet(str(staging / PREDICTIONS_DIR))
        report = write_report(spark, staging, opts, classifier, cols.label is not None)
    return PredictSummary(
        rows=report["rows"],
        bad_rows=report["bad_rows"],
        accuracy=report.get("accuracy"),
        model=classifier.description,
        output=str(Path(opts.output).absolute()),
        seconds=time.time() - t0,
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    with job_session_in_background("spark-collab predict", args) as wait_for_spark:
        # The model loads (and torch imports) while the JVM starts.
        language_model = is_language_model(opts)
        if language_model:
            from spark_jobs.predict_lm import load_language_model, score

            lm = load_language_model(opts)
            spark = wait_for_spark()
            spark.sparkContext.setLocalProperty("callSite.short", "spark-collab predict (LM)")
            summary = score(spark, opts, lm)
        else:
            classifier = load_model(opts)
            spark = wait_for_spark()
            spark.sparkContext.setLocalProperty("callSite.short", "spark-collab predict")
            summary = predict(spark, opts, classifier)
    if language_model:
        print(
            f"predict: {summary.rows} documents ({summary.bad_rows} malformed, null) with {summary.model}; "
            f"corpus perplexity {summary.corpus_perplexity}; {summary.seconds:.1f}s -> {summary.output}"
        )
        return 0
    acc = "n/a" if summary.accuracy is None else f"{summary.accuracy:.4f}"
    print(
        f"predict: {summary.rows} rows ({summary.bad_rows} malformed, null) with {summary.model}; "
        f"accuracy {acc}; {summary.seconds:.1f}s -> {summary.output}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
