"""The word count's Python API: ``count_words(spark, WordCountOptions(...)) -> WordCountResult``.

Everything here runs on the driver: it checks the inputs and the output, holds the output's lock,
builds the engine's plan (:mod:`spark_jobs.wordcount.engines`, whose map and reduce functions run
in Spark's Python workers) and writes the table through a staging directory. Only the ``top`` rows
and three totals reach the driver.

Lines end at LF, CRLF or a lone CR (Hadoop's line reader). Bytes that are not valid UTF-8 become
U+FFFD, and the number of lines that held any is reported.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.common.arrow_batches import arrow_batch_rows
from spark_jobs.common.locks import output_lock
from spark_jobs.common.output import check_no_overlap, check_output, local_path, staged_output
from spark_jobs.wordcount.engines import ARROW_BATCH_LINES, COUNTERS, OUTPUT_SCHEMA
from spark_jobs.wordcount.inputs import resolve_inputs
from spark_jobs.wordcount.options import WordCountOptions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class WordCountResult:
    output: Path
    """Where the table now is."""
    distinct_words: int
    total_tokens: int
    invalid_lines: int
    """Lines that held bytes which are not valid UTF-8 (counted as U+FFFD)."""
    top: list[tuple[str, int]]
    """The ``options.top`` most frequent (word, count) pairs, by count then word."""
    seconds: float
    """Wall time of the count and the write."""


@contextmanager
def prepared_inputs(options: WordCountOptions, protected: Sequence[str] = ()) -> Iterator[list[str]]:
    """Yield the files to count, with the output checked and locked for the whole block.

    Runs before a Spark session is needed, so that bad inputs fail in a second: inputs are resolved
    (:func:`~spark_jobs.wordcount.inputs.resolve_inputs`), an output overlapping them or
    ``protected`` (files the job reads besides its inputs, e.g. ``--spark-defaults``) is refused, as
    is an existing output without ``overwrite``. With ``options.demo`` the demo text is written to a
    temporary file that lives as long as the block.
    """
    files = [] if options.demo else resolve_inputs(options.inputs)
    check_no_overlap(options.output, [*options.inputs, *protected])
    # The lock is held from the existence check until the result is in place (staged_output
    # takes it again, nested), so two jobs can never both pass the check and replace each other.
    with (
        output_lock(local_path(options.output)),
        tempfile.TemporaryDirectory(prefix="wordcount-demo-") as demo_dir,
    ):
        check_output(options.output, options.overwrite)
        if options.demo:
            from spark_jobs.demo.text import demo_text

            demo_file = Path(demo_dir) / "demo.txt"
            demo_file.write_text(demo_text(), encoding="utf-8")
            files = [str(demo_file)]
        yield files


def count_files(spark: SparkSession, files: Sequence[str], options: WordCountOptions) -> WordCountResult:
    """Count ``files`` (already resolved; ``options.inputs`` and ``options.demo`` are not read)
    into ``options.output``.

    The output is written to a staging directory and renamed into place only when Spark's write
    succeeded, so a failed count leaves the output as it was.
    """
    with arrow_batch_rows(spark, ARROW_BATCH_LINES):
        return _count_and_write(spark, files, options)


def _count_and_write(spark: SparkSession, files: Sequence[str], options: WordCountOptions) -> WordCountResult:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    started = time.perf_counter()
    counted = COUNTERS[options.engine](spark, files, options.tokenizer)
    # The totals ride along with the write (one pass over the input); the null word is the
    # invalid-UTF-8 line count that the map side sends.
    observation = Observation("wordcount")
    counted = counted.observe(
        observation,
        F.sum(F.when(F.col("word").isNull(), F.col("count"))).alias("invalid"),
        F.sum(F.when(F.col("word").isNotNull(), F.col("count"))).alias("tokens"),
        F.count(F.col("word")).alias("distinct"),
    )
    fmt = options.output_format
    with staged_output(options.output, options.overwrite, inputs=files) as staging:
        table = counted.where(F.col("word").isNotNull() & (F.col("count") >= options.min_count))
        writer = table.write.mode("error")
        if fmt == "csv":
            writer = writer.option("header", "true")
        writer.format(fmt).save(str(staging))
        totals = observation.get
        best: list[tuple[str, int]] = []
        if options.top > 0:
            # Read back what was written (small) rather than recompute the count.
            reader = spark.read.schema(OUTPUT_SCHEMA).format(fmt)
            if fmt == "csv":
                reader = reader.option("header", "true")
            # Spark skips "."-prefixed paths such as our staging directory, so name its files.
            parts = sorted(str(p) for p in Path(staging).glob("part-*"))
            written = reader.load(parts) if parts else spark.createDataFrame([], OUTPUT_SCHEMA)
            best = [
                (r["word"], int(r["count"]))
                for r in written.orderBy(F.desc("count"), "word").limit(options.top).collect()
            ]
    return WordCountResult(
        output=check_output(options.output, overwrite=True),
        distinct_words=int(totals.get("distinct") or 0),
        total_tokens=int(totals.get("tokens") or 0),
        invalid_lines=int(totals.get("invalid") or 0),
        top=best,
        seconds=time.perf_counter() - started,
    )


def count_words(spark: SparkSession, options: WordCountOptions) -> WordCountResult:
    """The whole word count in a running session: check the inputs and the output, count, write."""
    with prepared_inputs(options) as files:
        return count_files(spark, files, options)
