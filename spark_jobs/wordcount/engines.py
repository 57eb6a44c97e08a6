"""The three word-count engines: exact, and all giving the same table (``word: string``, ``count: int64``).

- ``arrow`` (default, the fastest): each map task reads its own byte range of the input (Hadoop's
  split rule; Spark's text reader for ``hdfs://``-style paths, whose lines then arrive as Arrow
  batches), tokenizes megabyte blocks with a few calls each and counts them into one table per
  task (Arrow's C++ hashing; a ``Counter`` for ``cjk``): the in-mapper combiner
  (:mod:`spark_jobs.wordcount.combiner`). Only (word, partial count) pairs cross the shuffle, where
  Spark's built-in ``sum`` reduces them.
- ``rdd``: the same Map -> Shuffle -> Reduce spelled out with RDD operations: ``mapPartitions`` with
  an in-mapper combiner, ``partitionBy`` (hash partitioning), then a reduce per partition.
- ``dataframe``: Spark SQL built-ins. ``whitespace`` runs entirely in the JVM (``split`` on a character
  class holding exactly the characters Python's ``str.split()`` treats as whitespace, ``explode``,
  ``groupBy``); the JVM's ``lower()`` and ``\\w`` follow another Unicode version and other rules than
  Python's, so for ``words``/``cjk`` the per-line tokenizing is a vectorised Python UDF and the rest
  stays in the JVM.

Every engine also sends one row with a null word whose count is the number of lines that held
invalid UTF-8; :mod:`spark_jobs.wordcount.job` turns it into a total and leaves it out of the output.

Where the code runs: ``count_*`` build the plan on the driver. The functions returned by
``_arrow_count_task``, ``_split_count_task`` and ``_rdd_map_partition``, :func:`_rdd_reduce_partition`
and the UDF of ``_tokenize_udf`` are shipped to executors and run in Spark's Python workers
(``mapInArrow``, ``mapPartitions``, ``pandas_udf``).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from spark_jobs.wordcount.inputs import byte_splits, has_scheme
from spark_jobs.wordcount.tokenizers import decode_lines, get_tokenizer

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

OUTPUT_SCHEMA = "word string, count long"
# Lines per Arrow batch handed to Python: larger batches mean fewer Python calls per task.
ARROW_BATCH_LINES = 50_000

ArrowTask = Callable[[Iterator["pa.RecordBatch"]], Iterator["pa.RecordBatch"]]


# ---------------------------------------------------------------- arrow


def _arrow_count_task(tokenizer: str) -> ArrowTask:
    """Map side of the ``arrow`` engine over lines from Spark's text reader (runs in the workers)."""

    def count_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from spark_jobs.wordcount.combiner import BatchCounter

        counter = BatchCounter(tokenizer)
        for batch in batches:
            counter.add(batch.column(0))
        yield counter.result()

    return count_batches


def _split_count_task(tokenizer: str, splits: Sequence[tuple[str, int, int]]) -> ArrowTask:
    """Map side of the ``arrow`` engine when each task reads its own byte ranges of local files
    (runs in the workers): its rows are indexes into ``splits``, which travel with the function."""

    def count_splits(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from spark_jobs.wordcount.combiner import BatchCounter
        from spark_jobs.wordcount.inputs import read_split

        counter = BatchCounter(tokenizer)
        for batch in batches:
            for index in batch.column(0).to_pylist():
                for block in read_split(*splits[index]):
                    counter.add_blob(block)
        yield counter.result()

    return count_splits


def _lines(spark: SparkSession, files: Sequence[str]) -> DataFrame:
    return spark.read.text(list(files))


def count_arrow(spark: SparkSession, files: Sequence[str], tokenizer: str, direct: bool = True) -> DataFrame:
    """The ``arrow`` engine; ``direct=False`` takes the text-reader route even for local files."""
    from pyspark.sql import functions as F

    if direct and not any(has_scheme(f) for f in files):
        # Local (or shared-mount) files: each task reads its byte range itself, so the text never
        # passes through the JVM line reader, and never travels as one row per line.
        splits = byte_splits(files, spark.sparkContext.defaultParallelism)
        # One task per split, numbered by the JVM (spark.range): rows made in Python
        # (parallelize + toDF) would need Python workers of their own in every map task.
        indexes = spark.range(0, len(splits), 1, numPartitions=len(splits))
        partials = indexes.mapInArrow(_split_count_task(tokenizer, splits), OUTPUT_SCHEMA)
    else:
        # Each line goes to Python as raw bytes with its "\n" so a batch is one contiguous buffer;
        # bytes, not strings, so invalid UTF-8 reaches our decoder instead of being replaced silently.
        raw = _lines(spark, files).select(F.concat(F.col("value"), F.lit("\n")).cast("binary").alias("line"))
        partials = raw.mapInArrow(_arrow_count_task(tokenizer), OUTPUT_SCHEMA)
    return partials.groupBy("word").agg(F.sum("count").alias("count"))


# ---------------------------------------------------------------- rdd


def _rdd_map_partition(tokenizer: str) -> Callable[[Iterator], Iterator[tuple[str | None, int]]]:
    """Map side of the ``rdd`` engine with its in-mapper ``Counter`` (runs in the workers)."""

    def map_partition(rows: Iterator) -> Iterator[tuple[str | None, int]]:
        tokenize = get_tokenizer(tokenizer)
        counts: Counter[str] = Counter()
        bad_lines = 0
        for row in rows:
            text, bad = decode_lines(bytes(row[0]))
            bad_lines += bad
            counts.update(tokenize(text))
        yield from counts.items()
        yield (None, bad_lines)

    return map_partition


def _rdd_reduce_partition(pairs: Iterator[tuple[str | None, int]]) -> Iterator[tuple[str | None, int]]:
    """Reduce side of the ``rdd`` engine: sums one partition's pairs per word (runs in the workers)."""
    totals: dict[str | None, int] = {}
    for word, count in pairs:
        totals[word] = totals.get(word, 0) + count
    return iter(totals.items())


def count_rdd(spark: SparkSession, files: Sequence[str], tokenizer: str) -> DataFrame:
    from pyspark.sql import functions as F

    lines = _lines(spark, files).select(F.col("value").cast("binary")).rdd
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions", "4"))
    counted = (
        lines.mapPartitions(_rdd_map_partition(tokenizer))  # map + in-mapper combiner
        .partitionBy(partitions)  # shuffle: hash of the word picks the reducer
        .mapPartitions(_rdd_reduce_partition, preservesPartitioning=True)  # reduce
    )
    return spark.createDataFrame(counted, OUTPUT_SCHEMA)


# ---------------------------------------------------------------- dataframe


def python_whitespace_class() -> str:
    """A Java regex character class with exactly the characters ``str.split()`` splits on."""
    spaces = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    return "[" + "".join(f"\\x{{{c:X}}}" for c in spaces) + "]"


def _tokenize_udf(tokenizer: str) -> Callable[[Column], Column]:
    """A pandas UDF splitting each line with the Python tokenizer (runs in the workers)."""
    from pyspark.sql.functions import pandas_udf

    # No annotations: pandas_udf would read them as the UDF's type instead of the declared one.
    @pandas_udf("array<string>")
    def tokenize_lines(lines):
        tokenize = get_tokenizer(tokenizer)
        return lines.map(tokenize)

    return tokenize_lines


def count_dataframe(spark: SparkSession, files: Sequence[str], tokenizer: str) -> DataFrame:
    from pyspark.sql import functions as F

    value = F.col("value")
    text = F.regexp_replace(F.make_valid_utf8(value), "^\\x{FEFF}", "")
    if tokenizer == "whitespace":
        tokens = F.split(text, python_whitespace_class() + "+")
    else:
        tokens = _tokenize_udf(tokenizer)(text)
    # An invalid line adds one null "word"; its count is the number of such lines.
    marker = F.when(F.is_valid_utf8(value), F.array().cast("array<string>")).otherwise(
        F.array(F.lit(None).cast("string"))
    )
    words = _lines(spark, files).select(F.explode(F.concat(tokens, marker)).alias("word"))
    words = words.where(F.col("word").isNull() | (F.col("word") != ""))
    return words.groupBy("word").agg(F.count(F.lit(1)).alias("count"))


Engine = Callable[["SparkSession", Sequence[str], str], "DataFrame"]
COUNTERS: dict[str, Engine] = {"arrow": count_arrow, "rdd": count_rdd, "dataframe": count_dataframe}
