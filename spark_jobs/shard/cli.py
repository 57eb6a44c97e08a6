"""``spark-collab shard``: a data set -> train/val/test splits -> one Parquet shard per training rank.

A thin layer over the API: argparse -> :class:`ShardOptions` -> :func:`run_shard` -> exit code
(errors become one ``error:`` line through :func:`spark_jobs.common.cli.run_cli`). Runs on the driver;
every option is checked, and driver-side sources are read, before Spark starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from spark_jobs.common.cli import HelpFormatter, run_cli
from spark_jobs.common.errors import JobInputError
from spark_jobs.common.locks import output_lock
from spark_jobs.common.output import check_no_overlap, check_output, local_path
from spark_jobs.common.session import add_spark_arguments, job_session
from spark_jobs.shard.job import open_source, run_shard
from spark_jobs.shard.options import (
    DEFAULT_SPLIT,
    ShardOptions,
    check_counts,
    check_seed,
    check_table_options,
    parse_feature_shape,
    parse_fractions,
    parse_normalize,
    parse_partition,
    parse_partition_splits,
    parse_scale,
)
from spark_jobs.shard.sources import TableOptions, source_paths

# Options quoted back verbatim in error messages (argparse dest names).
QUOTED_OPTIONS = ("split", "partition", "partition_splits", "feature_shape", "scale", "normalize")


class GivenOption(argparse.Action):
    """Store the value and note in ``namespace.given`` that the user gave the option: an option that
    would be ignored is refused only when the user asked for it, not for its default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab shard",
        formatter_class=HelpFormatter,
        description=(
            "Turn a data set into train/val/test splits and one Parquet shard per training rank,\n"
            "plus manifest.json (see docs/data.md). Or, with --describe DIR, summarise existing shards."
        ),
    )
    parser.add_argument(
        "--source",
        default="mnist5k",
        help="mnist5k, digits, idx:IMAGES,LABELS, idx:PREFIX, csv:PATH, parquet:PATH",
    )
    parser.add_argument("--output", help="output directory; required unless --describe")
    parser.add_argument(
        "--shards",
        type=int,
        default=2,
        action=GivenOption,
        help="number of shards of the partitioned splits (one per rank)",
    )
    parser.add_argument(
        "--partition", default="iid", action=GivenOption, help="iid, dirichlet:ALPHA or pathological:K"
    )
    parser.add_argument(
        "--split",
        default=DEFAULT_SPLIT,
        help="split fractions; test=1 makes the whole source the test split",
    )
    parser.add_argument(
        "--partition-splits",
        default="train",
        action=GivenOption,
        help="comma-separated splits cut into --shards shards; the others get one shard",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split/partition hash and of the partitioner's random draws",
    )
    parser.add_argument(
        "--scale",
        default="auto",
        help="divide raw values by this: auto (255 for pixels, 16 for digits, 1 for tables), none, or a number",
    )
    parser.add_argument(
        "--normalize",
        default="none",
        help="after scaling: none, global (mean/std of the train split), or MEAN,STD",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of classes; unset: 10 for image sources, max label + 1 for tables",
    )
    parser.add_argument("--label-col", default="label", help="csv/parquet: label column")
    parser.add_argument(
        "--feature-cols",
        default=None,
        help="csv/parquet: comma-separated numeric feature columns; unset: all but label and id",
    )
    parser.add_argument(
        "--features-col",
        default=None,
        help="csv/parquet: one array column holding the features; unset: use --feature-cols",
    )
    parser.add_argument(
        "--id-col",
        default=None,
        help="csv/parquet: unique integer id column; unset: row index in file order",
    )
    parser.add_argument(
        "--feature-shape",
        default=None,
        help="per-sample shape recorded in the manifest, e.g. 28x28; unset: the source's",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--describe",
        metavar="DIR",
        default=None,
        help="print a per-shard table of an existing shards directory and exit",
    )
    parser.add_argument(
        "--plot", metavar="PNG", default=None, help="with --describe: also write a label-distribution plot"
    )
    add_spark_arguments(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> ShardOptions:
    """The parsed command line as :class:`ShardOptions`; the first bad option raises JobInputError."""
    if not args.output:
        raise JobInputError("--output is required (or pass --describe DIR)")
    # One option at a time, in the order of the help, so that the first bad one is reported.
    check_counts(args.shards, args.num_classes)
    fractions = parse_fractions(args.split)
    partition = parse_partition(args.partition)
    partition_splits = parse_partition_splits(args.partition_splits)
    normalize = parse_normalize(args.normalize)
    feature_shape = parse_feature_shape(args.feature_shape)
    table = TableOptions(
        label_col=args.label_col,
        feature_cols=tuple(c.strip() for c in args.feature_cols.split(",") if c.strip())
        if args.feature_cols
        else (),
        features_col=args.features_col,
        id_col=args.id_col,
    )
    check_table_options(table)
    check_seed(args.seed)
    scale = parse_scale(args.scale)
    return ShardOptions(
        output=args.output,
        source=args.source,
        shards=args.shards,
        partition=partition,
        fractions=fractions,
        partition_splits=partition_splits,
        seed=args.seed,
        scale=scale,
        normalize=normalize,
        num_classes=args.num_classes,
        table=table,
        feature_shape=feature_shape,
        overwrite=args.overwrite,
        given=frozenset(getattr(args, "given", ())),
        texts={name: getattr(args, name) or "" for name in QUOTED_OPTIONS},
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.describe:
        from spark_jobs.shard.describe import describe

        return describe(args.describe, args.plot)
    # Everything that can be checked without Spark is checked before it starts.
    options = options_from_args(args)
    source = open_source(options)
    target = local_path(options.output)
    check_no_overlap(target, [*source_paths(source), args.spark_defaults], what="--source")
    with output_lock(target):  # held until the shards are in place (staged_output nests in it)
        check_output(target, options.overwrite)
        with job_session("spark-collab shard", args) as spark:
            result = run_shard(spark, options, source)
    print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
