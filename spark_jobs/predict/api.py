"""The typed API of ``spark-collab predict``: :class:`PredictOptions` in, :class:`PredictSummary` out.

``predict(spark, PredictOptions(run=..., input=..., output=...))`` runs one job on a live session,
a classifier run through :mod:`spark_jobs.predict.images`, a GPT run through
:mod:`spark_jobs.predict.lm` (scores) or :mod:`spark_jobs.predict.lm_generate` (``generate=True``); the command line (:mod:`spark_jobs.predict.cli`) builds the same
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
# Default forward pass of a classifier. Small blocks keep each layer's activations in the CPU's
# cache: on the CNN of docs/benchmarks.md one torch thread predicts about 1.5x the rows per second
# in blocks of 128 to 512 rows as in blocks of 1,024.
CLASSIFIER_BATCH_ROWS = 256
LM_BATCH_DOCS = 1024  # documents per call into a Python worker when scoring or generating


@dataclass(frozen=True)
class PredictOptions:
    """One prediction job; the command line maps onto it one flag per field."""

    run: str
    """Run directory of a train or collab run (result.json plus checkpoint.pt or peers.pt)."""
    input: str
    """Image shards (manifest.json) or Parquet with a features column; for GPT runs: token shards,
    JSONL or Parquet with a text column, or text files."""
    output: str
    """Output directory: predictions/ (Parquet), report.json, confusion.png."""
    fusion: str | None = None
    """Collab runs: ensemble, average or peer:I; None: the run's own collab.fusion."""
    split: str = "test"
    """Shards input (image or token shards): the split to predict."""
    features_col: str = "features"
    """Parquet input: the array column of features (flattened, as many values as the model's inputs)."""
    id_col: str = "id"
    """Parquet input: the row id column (int64); absent: ids are generated (partitioning-dependent)."""
    label_col: str = "label"
    """Parquet input: the label column; absent: no accuracy in the report."""
    text_col: str = "text"
    """GPT runs, JSONL or Parquet input: the column holding each document's text."""
    batch_size: int = 0
    """Classifier runs: rows per forward pass in the executors (a multiple of 16); GPT runs: documents
    per call into a Python worker. 0: 256 rows for classifiers, 1024 documents for GPT runs."""
    bad_rows: str = "null"
    """Malformed rows: null (null prediction, counted and named in the report) or fail (exit 2)."""
    partitions: int = 0
    """Repartition the input into this many partitions first (0: keep the input's)."""
    overwrite: bool = False
    """Replace an existing output."""
    ship_model: bool = False
    """Ship the model files with the job (SparkContext.addArchive) instead of reading --run on every executor."""
    load_log: str | None = None
    """Append each Python worker's pid to this file when it loads the model (to check the loads)."""
    generate: bool = False
    """GPT runs: complete each input text (a prompt) instead of scoring it."""
    max_new_tokens: int | None = None
    """--generate: tokens to sample per prompt (default 100)."""
    temperature: float | None = None
    """--generate: softmax temperature, 0 picks the most likely token (default 0.8)."""
    top_k: int | None = None
    """--generate: sample among the K most likely tokens, 0 among all (default 200)."""
    seed: int | None = None
    """--generate: the sampling seed; row i samples with a generator seeded from (seed, i) (default 1337)."""

    def classifier_batch(self) -> int:
        """Rows per forward pass of a classifier, the default filled in."""
        return self.batch_size or CLASSIFIER_BATCH_ROWS

    def documents_per_call(self) -> int:
        """Documents per call into a Python worker for a GPT run, the default filled in."""
        return self.batch_size or LM_BATCH_DOCS

    def generation(self) -> GenerationSettings:
        """The sampling settings of ``--generate``, defaults filled in."""
        return GenerationSettings(
            max_new_tokens=GENERATION_DEFAULTS.max_new_tokens
            if self.max_new_tokens is None
            else self.max_new_tokens,
            temperature=GENERATION_DEFAULTS.temperature if self.temperature is None else self.temperature,
            top_k=GENERATION_DEFAULTS.top_k if self.top_k is None else self.top_k,
            seed=GENERATION_DEFAULTS.seed if self.seed is None else self.seed,
        )


@dataclass(frozen=True)
class GenerationSettings:
    """How ``--generate`` samples (the report records them)."""

    max_new_tokens: int
    temperature: float
    top_k: int
    """0: no limit."""
    seed: int


GENERATION_DEFAULTS = GenerationSettings(max_new_tokens=100, temperature=0.8, top_k=200, seed=1337)
GENERATION_FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "seed": "--seed",
}


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
    generated: bool = False
    """GPT runs with --generate: rows are prompts with completions, not scored documents."""


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
    if opts.batch_size and (opts.batch_size < ALIGN_ROWS or opts.batch_size % ALIGN_ROWS):
        raise JobInputError(
            f"--batch-size {opts.batch_size}: must be a positive multiple of {ALIGN_ROWS} (or 0 for the default)"
        )
    if opts.bad_rows not in BAD_ROWS:
        raise JobInputError(f"--bad-rows {opts.bad_rows!r}: choose {' or '.join(BAD_ROWS)}")
    if opts.partitions < 0:
        raise JobInputError(f"--partitions {opts.partitions}: must be >= 0 (0 keeps the input's)")
    check_generation(opts)


def check_generation(opts: PredictOptions) -> None:
    """The sampling flags: only with ``--generate``, and in range."""
    if not opts.generate:
        for name, flag in GENERATION_FLAGS.items():
            if getattr(opts, name) is not None:
                raise JobInputError(f"{flag}: only used with --generate; add --generate or drop {flag}")
        return
    settings = opts.generation()
    if settings.max_new_tokens < 1:
        raise JobInputError(f"--max-new-tokens {settings.max_new_tokens}: must be >= 1")
    if not settings.temperature >= 0 or settings.temperature == float("inf"):
        raise JobInputError(f"--temperature {settings.temperature}: must be a finite number >= 0")
    if settings.top_k < 0:
        raise JobInputError(f"--top-k {settings.top_k}: must be >= 0 (0: no limit)")
    if settings.seed < 0:
        raise JobInputError(f"--seed {settings.seed}: must be >= 0")


def check_classifier_options(opts: PredictOptions) -> None:
    """What a classifier run cannot do: ``--generate`` is for GPT runs."""
    if opts.generate:
        raise JobInputError(
            f"--generate: {opts.run} is a classifier run, which has no text to sample; pass a GPT run "
            "or drop --generate"
        )


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
        from spark_jobs.predict.lm import predict_language_model

        return predict_language_model(spark, opts)
    check_classifier_options(opts)
    from spark_jobs.predict.images import predict_images

    return predict_images(spark, opts, classifier)
