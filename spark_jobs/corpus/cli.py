"""``spark-collab corpus INPUT... --output DIR``: raw text to deduplicated, tokenized token shards.

Documents are files, paragraphs (separated by blank lines), lines, a JSONL field or a Parquet
column; dedup is exact and/or MinHash; the tokenizer is char, words:V or bpe:V (or file:PATH, an
earlier output's, reused) and is saved as DIR/tokenizer.json beside DIR/train and DIR/val shards.
``--describe DIR`` summarizes an output.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from contracts.wordsplit import TOKENIZERS as WORD_SPLITS
from spark_jobs.common.cli import HelpFormatter, run_cli
from spark_jobs.common.errors import JobInputError
from spark_jobs.common.output import check_output
from spark_jobs.common.session import add_spark_arguments, job_session
from spark_jobs.corpus.job import run_corpus
from spark_jobs.corpus.options import (
    CorpusOptions,
    MinHashOptions,
    parse_dedup,
    parse_doc_spec,
    parse_tokenizer_spec,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab corpus", description=__doc__.split("\n\n", 1)[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="files, directories or globs (.gz/.bz2 too)"
    )
    parser.add_argument("--output", help="output directory (token shards, tokenizer.json, manifest.json)")
    parser.add_argument(
        "--docs", default="file", help="document unit: file, paragraph, line, jsonl:FIELD or parquet:COLUMN"
    )
    parser.add_argument(
        "--tokenizer",
        default="char",
        help="char, words:V or bpe:V (trained on this corpus), or file:PATH (reuse the tokenizer.json of "
        "an earlier corpus output, so that the ids match a model trained on it)",
    )
    parser.add_argument("--word-split", choices=WORD_SPLITS, default="words", help="how words:V splits text")
    parser.add_argument("--dedup", default="none", help="none, exact, minhash or exact,minhash")
    defaults = MinHashOptions()
    parser.add_argument(
        "--minhash-threshold", type=float, default=defaults.threshold, help="estimated Jaccard"
    )
    parser.add_argument("--minhash-ngram", type=int, default=defaults.ngram, help="words per shingle")
    parser.add_argument("--minhash-bands", type=int, default=defaults.bands, help="LSH bands")
    parser.add_argument("--minhash-rows", type=int, default=defaults.rows, help="hashes per band")
    parser.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    parser.add_argument(
        "--max-chars", type=int, default=0, help="drop documents longer than this (0: no limit)"
    )
    parser.add_argument("--val", type=float, default=0.1, help="share of documents in the val split")
    parser.add_argument("--shards", type=int, default=1, help="train shards (one per training rank)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the shuffle and MinHash")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument(
        "--describe", metavar="DIR", help="summarize a corpus output and plot document lengths"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="with --describe: where the histogram goes (default DIR/doc_lengths.png)",
    )
    add_spark_arguments(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> CorpusOptions:
    return CorpusOptions(
        docs=parse_doc_spec(args.docs),
        tokenizer=parse_tokenizer_spec(args.tokenizer),
        word_split=args.word_split,
        dedup=parse_dedup(args.dedup),
        minhash=MinHashOptions(
            args.minhash_threshold, args.minhash_ngram, args.minhash_bands, args.minhash_rows
        ),
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        val_fraction=args.val,
        shards=args.shards,
        seed=args.seed,
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.describe:
        from spark_jobs.corpus.describe import describe

        return describe(args.describe, args.plot)
    if not args.output:
        raise JobInputError("--output is required (or --describe DIR to summarize an output)")
    options = options_from_args(args)
    check_output(args.output, args.overwrite)
    started = time.perf_counter()
    with job_session("spark-collab corpus", args) as spark:
        result = run_corpus(spark, args.inputs, args.output, options, overwrite=args.overwrite)
    docs = result.documents
    manifest = result.manifest
    split_text = ", ".join(
        f"{name} {manifest.split(name)['documents']} docs / {manifest.rows(name)} tokens in "
        f"{manifest.num_shards(name)} shard(s)"
        for name in ("train", "val")
        if manifest.has_split(name)
    )
    removed = ", ".join(f"{k} {v}" for k, v in docs.items() if k.endswith("_removed"))
    print(
        f"corpus: {docs['read']} documents read, {removed}; {split_text}; "
        f"{result.tokenizer.kind} vocabulary {result.tokenizer.vocab_size} -> {result.output} "
        f"({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.seconds.items())
    print(f"corpus stages: {stages}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
