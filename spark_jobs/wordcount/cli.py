"""MapReduce word count: ``spark-collab wordcount INPUT... --output DIR``.

The command line over :mod:`spark_jobs.wordcount.job` (driver only): arguments become one
:class:`~spark_jobs.wordcount.options.WordCountOptions`, the inputs and the output are checked
before the Spark session starts, then the count runs and its top words and summary are printed.
Errors become one ``error:`` line and exit code 2 (:func:`spark_jobs.common.cli.run_cli`).

Also the script ``spark-submit spark_jobs/wordcount/__main__.py INPUT... --output DIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from spark_jobs.common.cli import HelpFormatter, run_cli
from spark_jobs.common.session import add_spark_arguments, job_session
from spark_jobs.wordcount.job import WordCountResult, count_files, prepared_inputs
from spark_jobs.wordcount.options import ENGINES, FORMATS, WordCountOptions
from spark_jobs.wordcount.tokenizers import TOKENIZERS


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


def options_from_args(args: argparse.Namespace) -> WordCountOptions:
    """The job's options from parsed arguments (validated: a bad value raises JobInputError)."""
    return WordCountOptions(
        output=args.output,
        inputs=args.inputs,
        demo=args.demo,
        tokenizer=args.tokenizer,
        engine=args.engine,
        output_format=args.fmt,
        top=args.top,
        min_count=args.min_count,
        overwrite=args.overwrite,
    )


def print_result(result: WordCountResult, options: WordCountOptions, startup_seconds: float) -> None:
    """The top words on stdout; a warning about invalid UTF-8 and the summary line on stderr."""
    for word, count in result.top:
        print(f"{count:>12}  {word}")
    if result.invalid_lines:
        print(
            f"warning: {result.invalid_lines} line(s) held invalid UTF-8; those bytes were counted as U+FFFD",
            file=sys.stderr,
        )
    print(
        f"wordcount: {result.total_tokens} tokens, {result.distinct_words} distinct ({options.tokenizer}, "
        f"{options.engine}) -> {result.output} [{options.output_format}]; job {result.seconds:.1f} s, "
        f"session start {startup_seconds:.1f} s",
        file=sys.stderr,
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    # Inputs and output are checked before the session starts: a bad path costs no JVM start-up.
    with prepared_inputs(options, protected=[args.spark_defaults]) as files:
        started = time.perf_counter()
        with job_session("spark-collab wordcount", args) as spark:
            startup_seconds = time.perf_counter() - started
            result = count_files(spark, files, options)
    print_result(result, options, startup_seconds)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
