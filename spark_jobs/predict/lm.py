"""``spark-collab predict`` on a GPT run: per-document token count, mean loss and perplexity.

Runs on the driver; the scoring UDF's model code runs in Spark's Python workers and lives in
:mod:`spark_jobs.predict.worker`.

Documents come from raw text: JSONL or Parquet with a text column (``--text-col``), or text files
(one document per file). The executors tokenize them with the run's own tokenizer (the driver
reads it once from the run's token shards and ships it inside the UDF) and score them with
:func:`training.inference.document_loss`; the model is loaded once per Python worker. Token shards
from ``spark-collab corpus`` are scored in place (:mod:`spark_jobs.predict.lm_shards`). Output:
Parquet rows ``id, tokens, loss_sum, mean_loss, perplexity`` and ``report.json`` with the corpus
perplexity ``exp(sum of losses / sum of tokens)``. With ``--generate`` the texts are prompts
instead (:mod:`spark_jobs.predict.lm_generate`); :func:`predict_language_model` picks the path.

A document that is null, or that the tokenizer cannot encode (a character outside a char
vocabulary), is malformed: a null row counted in the report, or with ``--bad-rows fail`` the
job's one-line error (exit 2, nothing written).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.errors import JobInputError
from spark_jobs.common.output import staged_output
from spark_jobs.predict.api import PredictOptions, PredictSummary
from spark_jobs.predict.lm_shards import check_token_shards, shard_documents, shard_scores_frame, token_shards
from spark_jobs.predict.report import PREDICTIONS_DIR, REPORT
from spark_jobs.predict.tally import WrittenTally, tally_written

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from contracts.manifest import Manifest
    from training.inference import LanguageModel

TEXT_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def load_language_model(opts: PredictOptions) -> LanguageModel:
    """The GPT run's model and tokenizer, loaded once on the driver to check the run and the flags
    before any output exists (the executors load their own copies)."""
    from training.inference import InferenceError, load_language_model

    if opts.fusion is not None:
        raise JobInputError(f"--fusion {opts.fusion}: {opts.run} is a GPT run with one model; drop --fusion")
    if opts.ship_model:
        raise JobInputError(
            f"--ship-model: not available for GPT runs; put {opts.run} where every executor reads it "
            "(shared storage) and drop --ship-model"
        )
    try:
        return load_language_model(opts.run)
    except InferenceError as exc:
        raise JobInputError(str(exc)) from None


def text_format(path: str) -> str:
    """``parquet``, ``json`` or ``text``, from the file's suffix (for a directory: its first file's)."""
    target = Path(path)
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
        target = files[0] if files else target
    return TEXT_SUFFIXES.get(target.suffix.lower(), "text")


def read_documents(spark: SparkSession, opts: PredictOptions) -> DataFrame:
    """``id`` (int64) and ``text`` per document of a text input (not token shards)."""
    from pyspark.sql import functions as F

    if "://" not in opts.input and not Path(opts.input).exists():
        raise JobInputError(f"--input {opts.input}: no such file or directory")
    kind = text_format(opts.input)
    if kind == "text":
        df = spark.read.text(opts.input, wholetext=True).withColumnRenamed("value", "text")
        return df.select(F.monotonically_increasing_id().alias("id"), "text")
    df = spark.read.parquet(opts.input) if kind == "parquet" else spark.read.json(opts.input)
    if opts.text_col not in df.columns:
        raise JobInputError(
            f"--text-col {opts.text_col}: no such column in --input {opts.input} "
            f"(columns: {', '.join(df.columns)}); name the column holding each document's text"
        )
    ids = F.col(opts.id_col).cast("long") if opts.id_col in df.columns else F.monotonically_increasing_id()
    return df.select(ids.alias("id"), F.col(opts.text_col).cast("string").alias("text"))


def scores_frame(docs: DataFrame, lm: LanguageModel, opts: PredictOptions, torch_threads: int) -> DataFrame:
    """Every text document once: id, tokens, loss_sum (null for malformed ones)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    from spark_jobs.predict.worker import ScoreSpec, make_score_fn

    spec = ScoreSpec(opts.run, lm.tokenizer.to_json(), torch_threads, opts.load_log)
    udf = predict_batch_udf(
        make_score_fn(spec),
        return_type=StructType([StructField("tokens", LongType()), StructField("loss_sum", DoubleType())]),
        batch_size=opts.documents_per_call(),
    )
    scored = docs.where(F.col("text").isNotNull()).select("id", udf("text").alias("s"))
    encoded = F.col("s.tokens") >= 0
    scored = scored.select(
        "id",
        F.when(encoded, F.col("s.tokens")).alias("tokens"),
        F.when(encoded, F.col("s.loss_sum")).alias("loss_sum"),
    )
    nulls = docs.where(F.col("text").isNull()).select(
        "id", F.lit(None).cast("long").alias("tokens"), F.lit(None).cast("double").alias("loss_sum")
    )
    return scored.unionByName(nulls)


def refuse_bad_rows(counts: WrittenTally, opts: PredictOptions, what: str) -> None:
    """``--bad-rows fail``: JobInputError naming the first malformed ids, if there are any (raised
    inside the staged output, so the rows written so far are removed)."""
    if opts.bad_rows == "fail" and counts.bad_rows:
        named = f", ids {', '.join(map(str, counts.bad_row_ids))}" if counts.bad_row_ids else ""
        raise JobInputError(
            f"--input {opts.input}: {counts.bad_rows} {what} that are null or hold characters outside "
            f"the run's vocabulary{named}; fix or drop them, or pass --bad-rows null"
        )


def with_perplexity(scored: DataFrame) -> DataFrame:
    """``id, tokens, loss_sum`` plus ``mean_loss`` and ``perplexity`` (null without tokens)."""
    from pyspark.sql import functions as F

    mean = F.when(F.col("tokens") > 0, F.col("loss_sum") / F.col("tokens"))
    return scored.withColumn("mean_loss", mean).withColumn("perplexity", F.exp(F.col("mean_loss")))


def write_report(
    staging: Path, opts: PredictOptions, lm: LanguageModel, counts: WrittenTally, split: str | None
) -> dict[str, Any]:
    """report.json from the tally of the written scores; ``split``: the token shards' split scored,
    None for text input."""
    from contracts.atomic import write_json_atomic

    tokens = int(counts.sums["tokens"] or 0)
    corpus_loss = float(counts.sums["loss_sum"]) / tokens if tokens else None
    report = {
        "run": opts.run,
        "model": lm.description,
        "input": opts.input,
        **({"split": split} if split is not None else {}),
        "rows": counts.rows,
        "tokens": tokens,
        "bad_rows": counts.bad_rows,
        "bad_row_ids": counts.bad_row_ids,
        "corpus_loss": corpus_loss,
        "corpus_perplexity": math.exp(corpus_loss) if corpus_loss is not None else None,
    }
    write_json_atomic(staging / REPORT, report)
    return report


def predict_language_model(
    spark: SparkSession, opts: PredictOptions, lm: LanguageModel | None = None
) -> PredictSummary:
    """Score every document of ``opts.input`` with the GPT run ``opts.run``, or with
    ``opts.generate`` complete every text; ``lm``: the run already loaded on the driver."""
    lm = lm or load_language_model(opts)
    shards = token_shards(opts)
    if shards is not None:
        if opts.generate:
            raise JobInputError(
                f"--generate: --input {opts.input} holds token shards, not prompts; pass the prompts "
                "as JSONL, Parquet or text files"
            )
        check_token_shards(shards, opts, lm)
    if opts.generate:
        from spark_jobs.predict.lm_generate import complete

        return complete(spark, opts, lm)
    return score(spark, opts, lm, shards)


def score(
    spark: SparkSession, opts: PredictOptions, lm: LanguageModel, shards: Manifest | None = None
) -> PredictSummary:
    """Score every document of ``opts.input``: its text, or the documents of ``shards`` (the
    input's token shards manifest, already checked against the run) in split ``opts.split``."""
    t0 = time.time()
    torch_threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    with staged_output(opts.output, opts.overwrite, inputs=[opts.input, opts.run]) as staging:
        docs = read_documents(spark, opts) if shards is None else shard_documents(spark, shards, opts)
        if opts.partitions:
            docs = docs.repartition(opts.partitions)
        staging.mkdir(parents=True)
        scored = (
            scores_frame(docs, lm, opts, torch_threads)
            if shards is None
            else shard_scores_frame(docs, lm, opts, torch_threads)
        )
        with_perplexity(scored).write.parquet(str(staging / PREDICTIONS_DIR))
        counts = tally_written(spark, staging / PREDICTIONS_DIR, "tokens", sums=("tokens", "loss_sum"))
        refuse_bad_rows(counts, opts, "documents")
        report = write_report(staging, opts, lm, counts, None if shards is None else opts.split)
    return PredictSummary(
        rows=report["rows"],
        bad_rows=report["bad_rows"],
        accuracy=None,
        model=lm.description,
        output=str(Path(opts.output).absolute()),
        seconds=time.time() - t0,
        corpus_perplexity=report["corpus_perplexity"],
    )
