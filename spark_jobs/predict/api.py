"""The typed API of ``spark-collab predict``: :class:`PredictOptions` in, :class:`PredictSummary` out.

``predict(spark, PredictOptions(run=..., input=..., output=...))`` runs one job on a live session,
a classifier run through :mod:`spark_jobs.predict.images`, a GPT run through
:mod:`spark_jobs.predict.lm`; the command line (:mod:`spark_jobs.predict.cli`) builds the same
options from its flags, one flag per field. Runs on the driver only; no pyspark or torch import here.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spark_jobs.common.errors import JobInputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from training.inference import Classifier

BAD_ROWS = ("null", "fail")
ALIGN_ROWS = 16  # training.inference.ALIGN_ROWS, repeated so that --help needs no torch import
SHOWN_BAD_IDS = 10  # malformed rows named in an error or a report


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
    """What one job did: the one line the command prints is made from it."""

    rows: int
    bad_rows: int
    accuracy: float | None
    """Classifier runs with labelled input; None otherwise."""
    model: str
    output: str
    """The output directory, absolute."""
    seconds: float
    corpus_perplexity: float | None = None
    """GPT runs: exp(sum of losses / sum of tokens) over the well-formed documents."""


def field_docs() -> dict[str, str]:
    """Each :class:`PredictOptions` field's docstring (the string literal below it), for ``--help``."""
    tree = ast.parse(inspect.getsource(PredictOptions))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            docs[node.target.id] = after.value.value.strip()  # type: ignore[attr-defined,union-attr]
    return docs


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


def predict(
    spark: SparkSession, opts: PredictOptions, classifier: Classifier | None = None
) -> PredictSummary:
    """Run one prediction job on ``spark``; JobInputError (nothing written) for the user's mistakes.

    ``classifier``: the run's model when the caller has loaded it already (it is then a classifier
    run); None: the run is loaded here, and a GPT run is scored per document.
    """
    check_options(opts)
    if classifier is None and is_language_model(opts):
        from spark_jobs.predict.lm import score

        return score(spark, opts)
    from spark_jobs.predict.images import predict_images

    return predict_images(spark, opts, classifier)
