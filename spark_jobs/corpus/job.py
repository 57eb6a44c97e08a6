"""The corpus pipeline: documents -> length filter -> dedup -> tokenizer -> tokens -> shards.

The text is read once, together with the keys that filtering and dedup need
(:mod:`spark_jobs.corpus.keys`). The length filter and dedup stages then work on those key columns
alone and yield the ids of the documents that stay; the text is read again only to train the
tokenizer and to tokenize the documents that stayed. Each stage's result is written as Parquet
under a work directory inside the staged output (and removed before the output is moved into
place), so no stage is computed twice and the driver never holds the text; the stage counts come
from those files. Everything written depends only on the inputs and
:class:`~spark_jobs.corpus.options.CorpusOptions`, so a rerun is byte-identical.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.manifest import Manifest
from contracts.tokenizer import Tokenizer
from contracts.tokens import TOKENIZER_FILE, token_dtype_for
from spark_jobs.common.arrow_batches import arrow_batch_rows
from spark_jobs.common.errors import JobInputError
from spark_jobs.common.output import check_no_overlap, check_output, staged_output
from spark_jobs.corpus import dedup
from spark_jobs.corpus.documents import (
    DOCS_DDL,
    check_parquet_column,
    input_errors,
    plan_reads,
    read_task,
    read_to_files_task,
)
from spark_jobs.corpus.keys import DocumentKeys
from spark_jobs.corpus.options import CorpusOptions, validate
from spark_jobs.corpus.shards import plan_shards, write_shards
from spark_jobs.corpus.vocab import train_tokenizer
from spark_jobs.corpus.workers import TOKENS_DDL, encode_task

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WORK_DIR = "_work"
# Documents per Arrow batch sent to a Python worker (Spark's default is 10,000): a partition then
# streams as several batches, so the JVM reads and converts the next one while the worker tokenizes
# this one (a partition of the 200 MB benchmark corpus holds about 7,000 documents).
DOCS_PER_ARROW_BATCH = 1000


@dataclass
class CorpusResult:
    output: Path
    manifest: Manifest
    tokenizer: Tokenizer
    documents: dict[str, int]
    """Documents read, removed by each stage, and kept."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage (not written to the output: it would break byte-identical reruns)."""


def resolve_corpus_inputs(inputs: Sequence[str]) -> list[str]:
    """The word count's input expansion; remote URIs are refused (workers open files themselves)."""
    from spark_jobs.wordcount.inputs import resolve_inputs

    files = resolve_inputs(inputs)
    remote = [f for f in files if "://" in f and not f.startswith("file:")]
    if remote:
        raise JobInputError(f"input {remote[0]}: the corpus job reads local (or mounted) paths only")
    return files


class _Stages:
    """Materializes each stage as Parquet in the work directory and times it."""

    def __init__(self, spark: SparkSession, work: Path) -> None:
        self.spark, self.work = spark, work
        self.seconds: dict[str, float] = {}

    def save(self, name: str, frame: DataFrame) -> tuple[DataFrame, int]:
        started = time.perf_counter()
        path = str(self.work / name)
        with input_errors():
            frame.write.mode("error").parquet(path)
        saved = self.spark.read.parquet(path)
        count = saved.count()
        self.seconds[name] = time.perf_counter() - started
        return saved, count


def _numbered_reads(
    spark: SparkSession, files: Sequence[str], options: CorpusOptions
) -> tuple[list[tuple[str, int, int, int]], DataFrame]:
    """The read tasks of :func:`plan_reads` and a frame of their numbers, spread over the executors."""
    parallelism = spark.sparkContext.defaultParallelism
    tasks = plan_reads(files, options.docs, parallelism)
    slices = min(len(tasks), 4 * parallelism)
    # Tasks numbered by the JVM: rows made in Python (parallelize + toDF) would need a Python
    # worker of their own in every reading task.
    return tasks, spark.range(0, len(tasks), 1, numPartitions=max(1, slices))


def read_documents(
    spark: SparkSession, files: Sequence[str], options: CorpusOptions, keys: DocumentKeys | None = None
) -> DataFrame:
    """The documents of ``files`` (DOCS_DDL, then the columns of ``keys``), read by the executors."""
    tasks, numbers = _numbered_reads(spark, files, options)
    ddl = f"{DOCS_DDL}, {keys.ddl}" if keys else DOCS_DDL
    return numbers.mapInArrow(read_task(options.docs, tasks, keys), ddl)


def read_documents_into(
    spark: SparkSession, files: Sequence[str], options: CorpusOptions, keys: DocumentKeys, directory: Path
) -> tuple[DataFrame, int]:
    """Read ``files`` into Parquet files in ``directory``, written by the executors' Python workers
    (:func:`read_to_files_task`); return the documents as a frame over those files, and their count."""
    tasks, numbers = _numbered_reads(spark, files, options)
    directory.mkdir(parents=True)
    task = read_to_files_task(options.docs, tasks, keys, str(directory))
    with input_errors():
        written = numbers.mapInArrow(task, "file string, rows long").collect()
    return spark.read.schema(f"{DOCS_DDL}, {keys.ddl}").parquet(str(directory)), sum(
        r["rows"] for r in written
    )


def length_filtered(docs: DataFrame, options: CorpusOptions) -> DataFrame:
    """The rows of ``docs`` (with ``n_chars``) whose length is inside the limits."""
    from pyspark.sql import functions as F

    keep = F.col("n_chars") >= options.min_chars
    if options.max_chars:
        keep = keep & (F.col("n_chars") <= options.max_chars)
    return docs.where(keep)


def kept_documents(
    stages: _Stages, read: DataFrame, options: CorpusOptions, counts: dict[str, int]
) -> DataFrame:
    """``doc_id`` of the documents that pass the length filter and dedup, saved stage by stage from
    the key columns of ``read``; ``counts`` gets what each stage removed, and ``kept``."""
    from pyspark.sql import functions as F

    in_limits = length_filtered(read, options)
    if "exact" in options.dedup:
        # One stage for both: the exact groups of the documents within the length limits, whose
        # sizes add up to the length filter's count.
        groups, after = stages.save("exact", dedup.exact_groups(in_limits.select("doc_id", "digest")))
        left = groups.agg(F.sum("members")).first()[0] or 0
        counts["length_filter_removed"] = counts["read"] - left
        counts["exact_removed"], left = left - after, after
        kept = groups.select("doc_id")
    else:
        kept, left = stages.save("filtered", in_limits.select("doc_id"))
        counts["length_filter_removed"] = counts["read"] - left
    if "minhash" in options.dedup:
        started = time.perf_counter()
        sigs = (
            read.where(F.col("sig").isNotNull())
            .select("doc_id", "sig", "bands")
            .join(kept, "doc_id", "left_semi")
        )
        removed = dedup.near_duplicates(sigs, options.minhash)
        kept, after = stages.save("minhash", kept.join(removed, "doc_id", "left_anti"))
        stages.seconds["minhash"] = time.perf_counter() - started  # candidate pairs and components too
        counts["minhash_removed"], left = left - after, after
    counts["kept"] = left
    return kept


def run_corpus(
    spark: SparkSession,
    inputs: Sequence[str],
    output: str | Path,
    options: CorpusOptions,
    *,
    overwrite: bool = False,
) -> CorpusResult:
    """Turn ``inputs`` into token shards at ``output``; JobInputError (nothing written) on bad input."""
    validate(options)
    check_no_overlap(output, inputs)
    check_output(output, overwrite)
    files = resolve_corpus_inputs(inputs)
    if options.docs.unit == "parquet":
        check_parquet_column(files, options.docs.field or "")
    with (
        arrow_batch_rows(spark, DOCS_PER_ARROW_BATCH),
        staged_output(output, overwrite, inputs=inputs) as staging,
    ):
        stages = _Stages(spark, staging / WORK_DIR)
        started = time.perf_counter()
        keys = DocumentKeys.for_options(options)
        read, count = read_documents_into(spark, files, options, keys, staging / WORK_DIR / "read")
        stages.seconds["read"] = time.perf_counter() - started
        counts = {"read": count}
        kept = kept_documents(stages, read, options, counts)
        if not counts["kept"]:
            raise JobInputError(
                f"no document left after filtering ({_counts_text(counts)}); check the inputs and --docs, "
                "or loosen --min-chars/--max-chars"
            )
        docs = read.select("doc_id", "text").join(kept, "doc_id", "left_semi")
        started = time.perf_counter()
        tokenizer = train_tokenizer(docs, options.tokenizer, options.word_split)
        stages.seconds["tokenizer"] = time.perf_counter() - started
        dtype = token_dtype_for(tokenizer.vocab_size)
        broadcast = spark.sparkContext.broadcast(tokenizer.to_json())
        tokens, _ = stages.save("tokens", docs.mapInArrow(encode_task(broadcast, dtype), TOKENS_DDL))
        started = time.perf_counter()
        meta = tokens.select("doc_id", "n_tokens").toArrow()
        plan = plan_shards(
            meta["doc_id"].to_numpy(),
            meta["n_tokens"].to_numpy(),
            options.val_fraction,
            options.shards,
            options.seed,
        )
        splits = write_shards(spark, tokens, plan, str(staging), dtype)
        stages.seconds["shards"] = time.perf_counter() - started
        broadcast.unpersist()
        tokenizer.save(staging / TOKENIZER_FILE)
        manifest = Manifest(
            kind="tokens",
            splits=splits,
            source={"inputs": list(files), "docs": options.docs.spec},
            seed=options.seed,
            extra={
                "vocab_size": tokenizer.vocab_size,
                "token_dtype": dtype,
                "tokenizer": {
                    "kind": tokenizer.kind,
                    "spec": options.tokenizer.spec,
                    "file": TOKENIZER_FILE,
                    "sha256": tokenizer.sha256(),
                },
                "documents": counts,
                "options": _options_record(options),
            },
        )
        shutil.rmtree(staging / WORK_DIR)
        manifest.write(staging)
    return CorpusResult(
        output=check_output(output, overwrite=True),
        manifest=Manifest.read(output, kind="tokens"),
        tokenizer=tokenizer,
        documents=counts,
        seconds=stages.seconds,
    )


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def _options_record(options: CorpusOptions) -> dict[str, Any]:
    record = dataclasses.asdict(options)
    record["docs"] = options.docs.spec
    record["tokenizer"] = options.tokenizer.spec
    record["dedup"] = list(options.dedup)
    return record
