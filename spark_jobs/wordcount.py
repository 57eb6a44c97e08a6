"""MapReduce word count: ``spark-collab wordcount INPUT... --output DIR``.

Three engines, all exact and all giving the same table (``word: string``, ``count: int64``):

- ``arrow`` (default, the fastest): each map task reads its own byte range of the input (Hadoop's
  split rule; Spark's text reader for ``hdfs://``-style paths, whose lines then arrive as Arrow
  batches), tokenizes megabyte blocks with a few calls each and counts them into one table per
  task (Arrow's C++ hashing; a ``Counter`` for ``cjk``): the in-mapper combiner
  (:mod:`spark_jobs.fastcount`). Only (word, partial
  count) pairs cross the shuffle, where Spark's built-in ``sum`` reduces them.
- ``rdd``: the same Map -> Shuffle -> Reduce spelled out with RDD operations: ``mapPartitions`` with
  an in-mapper combiner, ``partitionBy`` (hash partitioning), then a reduce per partition.
- ``dataframe``: Spark SQL built-ins. ``whitespace`` runs entirely in the JVM (``split`` on a character
  class holding exactly the characters Python's ``str.split()`` treats as whitespace, ``explode``,
  ``groupBy``); the JVM's ``lower()`` and ``\\w`` follow another Unicode version and other rules than
  Python's, so for ``words``/``cjk`` the per-line tokenizing is a vectorised Python UDF and the rest
  stays in the JVM.

Lines end at LF, CRLF or a lone CR (Hadoop's line reader). Bytes that are not valid UTF-8 become
U+FFFD, and the number of lines that held any is reported.
"""

from __future__ import annotations

import argparse
import bz2
import glob
import gzip
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.cli import HelpFormatter, run_cli
from spark_jobs.errors import JobInputError
from spark_jobs.locks import output_lock
from spark_jobs.output import check_no_overlap, check_output, local_path, staged_output
from spark_jobs.session import add_spark_arguments, job_session
from spark_jobs.tokenizers import TOKENIZERS, decode_lines, get_tokenizer

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

ENGINES = ("arrow", "rdd", "dataframe")
FORMATS = ("parquet", "csv", "json")
OUTPUT_SCHEMA = "word string, count long"
# Lines per Arrow batch handed to Python: larger batches mean fewer Python calls per task.
ARROW_BATCH_LINES = 50_000


# ---------------------------------------------------------------- inputs


def _has_scheme(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def _visible_files(directory: Path) -> list[Path]:
    # Hidden and "_"-prefixed files are Spark/Hadoop bookkeeping (_SUCCESS, .crc), never text.
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [Path(root) / f for f in sorted(files) if not f.startswith((".", "_"))]
    return found


def resolve_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand files, directories and globs to a sorted list of files; raise on anything missing.

    Paths with a URI scheme (``hdfs://``, ``s3a://``) are passed to Spark unchecked.
    """
    if not inputs:
        raise JobInputError("no input given: pass one or more files, directories or globs, or --demo")
    files: list[str] = []
    for item in inputs:
        if _has_scheme(item):
            files.append(item)
            continue
        local = item[len("file://") :] if item.startswith("file://") else item
        matches = (
            sorted(glob.glob(os.path.expanduser(local), recursive=True)) if glob.has_magic(local) else [local]
        )
        if not matches:
            raise JobInputError(
                f"input {item}: no file matches this pattern; check the path or quote the glob"
            )
        for match in matches:
            path = Path(match).expanduser()
            if path.is_dir():
                found = _visible_files(path)
                if not found:
                    raise JobInputError(
                        f"input {path}: directory holds no files; add text files or remove it"
                    )
                files += [str(p.absolute()) for p in found]
            elif path.is_file():
                files.append(str(path.absolute()))
            else:
                raise JobInputError(f"input {path}: no such file or directory; check the path")
    unique = list(dict.fromkeys(files))
    if not any(_has_scheme(f) or not _is_empty(f) for f in unique):
        shown = unique[0] if len(unique) == 1 else f"{unique[0]} (and {len(unique) - 1} more)"
        raise JobInputError(f"input {shown}: empty input, nothing to count; pass a non-empty text file")
    return unique


def _is_empty(path: str) -> bool:
    if os.path.getsize(path) == 0:
        return True
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(Path(path).suffix)
    if opener is None:
        return False
    try:
        with opener(path, "rb") as handle:
            return handle.read(1) == b""
    except (OSError, EOFError) as exc:
        raise JobInputError(f"input {path}: cannot decompress ({exc}); check the file") from None


# ---------------------------------------------------------------- engines


def _arrow_count_task(tokenizer: str):
    """Map side of the ``arrow`` engine over lines from Spark's text reader."""

    def count_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from spark_jobs.fastcount import BatchCounter

        counter = BatchCounter(tokenizer)
        for batch in batches:
            counter.add(batch.column(0))
        yield counter.result()

    return count_batches


def _split_count_task(tokenizer: str):
    """Map side of the ``arrow`` engine when each task reads its own byte range of a local file."""

    def count_splits(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from spark_jobs.fastcount import BatchCounter, read_split

        counter = BatchCounter(tokenizer)
        for batch in batches:
            for path, start, end in zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True):
                for block in read_split(path, start, end):
                    counter.add_blob(block)
        yield counter.result()

    return count_splits


def byte_splits(files: Sequence[str], parallelism: int) -> list[tuple[str, int, int]]:
    """(path, start, end) ranges like Spark's file splits: about total / parallelism bytes each,
    between 4 MB and 128 MB; compressed files are one split (end -1: read to the end)."""
    sizes = {f: os.path.getsize(f) for f in files}
    target = min(128 << 20, max(4 << 20, sum(sizes.values()) // max(parallelism, 1) + 1))
    splits: list[tuple[str, int, int]] = []
    for path, size in sizes.items():
        if path.endswith((".gz", ".bz2")):
            splits.append((path, 0, -1))
        else:
            splits += [(path, start, min(start + target, size)) for start in range(0, size, target)]
    return splits


def _lines(spark: SparkSession, files: Sequence[str]) -> DataFrame:
    return spark.read.text(list(files))


def count_arrow(spark: SparkSession, files: Sequence[str], tokenizer: str, direct: bool = True) -> DataFrame:
    from pyspark.sql import functions as F

    if direct and not any(_has_scheme(f) for f in files):
        # Local (or shared-mount) files: each task reads its byte range itself, so the text never
        # passes through the JVM line reader, and never travels as one row per line.
        splits = byte_splits(files, spark.sparkContext.defaultParallelism)
        ranges = spark.sparkContext.parallelize(splits, len(splits)).toDF("path string, start long, end long")
        partials = ranges.mapInArrow(_split_count_task(tokenizer), OUTPUT_SCHEMA)
    else:
        # Each line goes to Python as raw bytes with its "\n" so a batch is one contiguous buffer;
        # bytes, not strings, so invalid UTF-8 reaches our decoder instead of being replaced silently.
        raw = _lines(spark, files).select(F.concat(F.col("value"), F.lit("\n")).cast("binary").alias("line"))
        partials = raw.mapInArrow(_arrow_count_task(tokenizer), OUTPUT_SCHEMA)
    return partials.groupBy("word").agg(F.sum("count").alias("count"))


def _rdd_map_partition(tokenizer: str):
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


def python_whitespace_class() -> str:
    """A Java regex character class with exactly the characters ``str.split()`` splits on."""
    spaces = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    return "[" + "".join(f"\\x{{{c:X}}}" for c in spaces) + "]"


def _tokenize_udf(tokenizer: str):
    from pyspark.sql.functions import pandas_udf

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


COUNTERS = {"arrow": count_arrow, "rdd": count_rdd, "dataframe": count_dataframe}


# ---------------------------------------------------------------- job


@dataclass
class WordCountResult:
    output: Path
    distinct_words: int
    total_tokens: int
    invalid_lines: int
    top: list[tuple[str, int]]
    seconds: float


def run_wordcount(
    spark: SparkSession,
    files: Sequence[str],
    output: str | Path,
    *,
    tokenizer: str = "words",
    engine: str = "arrow",
    fmt: str = "parquet",
    top: int = 0,
    min_count: int = 1,
    overwrite: bool = False,
) -> WordCountResult:
    """Count ``files`` into ``output``; only the ``top`` rows and three totals reach the driver."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    started = time.perf_counter()
    counted = COUNTERS[engine](spark, files, tokenizer)
    # The totals ride along with the write (one pass over the input); the null word is the
    # invalid-UTF-8 line count that the map side sends.
    observation = Observation("wordcount")
    counted = counted.observe(
        observation,
        F.sum(F.when(F.col("word").isNull(), F.col("count"))).alias("invalid"),
        F.sum(F.when(F.col("word").isNotNull(), F.col("count"))).alias("tokens"),
        F.count(F.col("word")).alias("distinct"),
    )
    with staged_output(output, overwrite, inputs=files) as staging:
        table = counted.where(F.col("word").isNotNull() & (F.col("count") >= min_count))
        writer = table.write.mode("error")
        if fmt == "csv":
            writer = writer.option("header", "true")
        writer.format(fmt).save(str(staging))
        totals = observation.get
        best: list[tuple[str, int]] = []
        if top > 0:
            # Read back what was written (small) rather than recompute the count.
            reader = spark.read.schema(OUTPUT_SCHEMA).format(fmt)
            if fmt == "csv":
                reader = reader.option("header", "true")
            # Spark skips "."-prefixed paths such as our staging directory, so name its files.
            parts = sorted(str(p) for p in Path(staging).glob("part-*"))
            written = reader.load(parts) if parts else spark.createDataFrame([], OUTPUT_SCHEMA)
            best = [
                (r["word"], int(r["count"]))
                for r in written.orderBy(F.desc("count"), "word").limit(top).collect()
            ]
    return WordCountResult(
        output=check_output(output, overwrite=True),
        distinct_words=int(totals.get("distinct") or 0),
        total_tokens=int(totals.get("tokens") or 0),
        invalid_lines=int(totals.get("invalid") or 0),
        top=best,
        seconds=time.perf_counter() - started,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab wordcount",
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="text files, directories or globs (.gz/.bz2 too)"
    )
    parser.add_argument("--output", required=True, help="output directory (word, count)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="count the Python documentation text that CPython ships (pydoc_data.topics)",
    )
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="words", help="how lines become words")
    parser.add_argument("--engine", choices=ENGINES, default="arrow", help="how the count runs on Spark")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="parquet", help="output format")
    parser.add_argument("--top", type=int, default=0, metavar="N", help="print the N most frequent words")
    parser.add_argument(
        "--min-count", type=int, default=1, metavar="N", help="keep words seen at least N times"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_spark_arguments(parser)
    return parser


def _print_result(result: WordCountResult, args: argparse.Namespace, startup: float) -> None:
    for word, count in result.top:
        print(f"{count:>12}  {word}")
    if result.invalid_lines:
        print(
            f"warning: {result.invalid_lines} line(s) held invalid UTF-8; those bytes were counted as U+FFFD",
            file=sys.stderr,
        )
    print(
        f"wordcount: {result.total_tokens} tokens, {result.distinct_words} distinct ({args.tokenizer}, "
        f"{args.engine}) -> {result.output} [{args.fmt}]; job {result.seconds:.1f} s, session start {startup:.1f} s",
        file=sys.stderr,
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 0:
        raise JobInputError(f"--top {args.top}: must be >= 0 (0 prints no words)")
    if args.min_count < 1:
        raise JobInputError(f"--min-count {args.min_count}: must be >= 1 (1 keeps every word)")
    if args.demo and args.inputs:
        raise JobInputError("--demo counts the embedded text; drop the INPUT paths or drop --demo")
    files = [] if args.demo else resolve_inputs(args.inputs)
    check_no_overlap(args.output, [*args.inputs, args.spark_defaults])
    # The lock is held from the existence check until the result is in place (staged_output
    # takes it again, nested), so two jobs can never both pass the check and replace each other.
    with (
        output_lock(local_path(args.output)),
        tempfile.TemporaryDirectory(prefix="wordcount-demo-") as demo_dir,
    ):
        check_output(args.output, args.overwrite)
        if args.demo:
            from spark_jobs.demo_text import demo_text

            demo_file = Path(demo_dir) / "demo.txt"
            demo_file.write_text(demo_text(), encoding="utf-8")
            files = [str(demo_file)]
        started = time.perf_counter()
        with job_session("spark-collab wordcount", args) as spark:
            startup = time.perf_counter() - started
            previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_LINES))
            try:
                result = run_wordcount(
                    spark,
                    files,
                    args.output,
                    tokenizer=args.tokenizer,
                    engine=args.engine,
                    fmt=args.fmt,
                    top=args.top,
                    min_count=args.min_count,
                    overwrite=args.overwrite,
                )
            finally:
                spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    _print_result(result, args, startup)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
