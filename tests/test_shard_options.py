"""ShardOptions: parsed once from the command line or built in Python, with errors that name the option."""

from __future__ import annotations

import re

import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard import Normalization, Partition, ShardOptions, TableOptions
from spark_jobs.shard.cli import build_parser, options_from_args
from spark_jobs.shard.options import check_options_used


def parse(*argv: str) -> ShardOptions:
    return options_from_args(build_parser().parse_args(["--output", "out", *argv]))


def test_command_line_defaults_equal_the_dataclass_defaults() -> None:
    assert parse() == ShardOptions(output="out")


def test_every_option_lands_typed() -> None:
    options = parse(
        "--source", "digits", "--shards", "4", "--partition", "dirichlet:0.5",
        "--split", "train=0.75,test=0.25", "--partition-splits", "train,test", "--seed", "7",
        "--scale", "none", "--normalize", "0.1307,0.3081", "--num-classes", "10",
        "--feature-cols", "a, b", "--id-col", "id", "--feature-shape", "8x8", "--overwrite",
    )  # fmt: skip
    assert options.source == "digits" and options.shards == 4 and options.seed == 7
    assert options.partition == Partition("dirichlet", alpha=0.5)
    assert options.fractions == {"train": 0.75, "test": 0.25}
    assert options.partition_splits == ("train", "test")
    assert options.scale == 1.0 and options.normalize == Normalization("explicit", 0.1307, 0.3081)
    assert options.table == TableOptions(feature_cols=("a", "b"), id_col="id")
    assert options.feature_shape == (8, 8) and options.num_classes == 10 and options.overwrite
    assert options.given == {"shards", "partition", "partition_splits"}
    assert parse("--scale", "auto").scale is None  # the source decides


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shards", "0"], "--shards 0: must be at least 1"),
        (["--num-classes", "0"], "--num-classes 0: must be at least 1"),
        (["--split", "train=0.5"], "--split train=0.5: fractions sum to 0.5"),
        (["--partition", "dirichlet:-1"], "--partition dirichlet:-1: dirichlet alpha must be > 0"),
        (["--partition-splits", "train,dev"], "--partition-splits train,dev: unknown split 'dev'"),
        (["--normalize", "0,0"], "--normalize 0,0: STD must be > 0"),
        (["--feature-shape", "28xq"], "--feature-shape 28xq: expected dimensions like 28x28"),
        (["--features-col", "f", "--feature-cols", "a"], "--features-col and --feature-cols"),
        (["--seed", "-1"], "--seed -1: must be between 0 and 2**63-1"),
        (["--scale", "zero"], "--scale zero: expected auto, none or a positive number"),
    ],
)
def test_bad_value_names_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(JobInputError, match=re.escape(message)):
        parse(*argv)


def test_options_built_in_python_get_the_same_checks() -> None:
    with pytest.raises(JobInputError, match="--shards 0: must be at least 1"):
        ShardOptions(output="out", shards=0)
    with pytest.raises(JobInputError, match="--partition pathological: expected pathological:K"):
        ShardOptions(output="out", partition=Partition("pathological"))
    with pytest.raises(JobInputError, match=re.escape("--split train=0.5,test=0.25: fractions sum to 0.75")):
        ShardOptions(output="out", fractions={"train": 0.5, "test": 0.25})
    with pytest.raises(JobInputError, match=re.escape("--scale -2.0: the divisor must be a positive number")):
        ShardOptions(output="out", scale=-2.0)
    # A zero fraction drops its split, as on the command line.
    assert ShardOptions(output="out", fractions={"train": 1.0, "val": 0.0}).fractions == {"train": 1.0}


def test_messages_quote_the_option_as_written() -> None:
    options = parse("--split", "train=0.80,val=0.2", "--partition-splits", "test")
    with pytest.raises(
        JobInputError, match=re.escape("--partition-splits test: --split train=0.80,val=0.2 makes no")
    ):
        check_options_used(options, num_classes=10)
    # An option left at its default is not refused for having no effect.
    check_options_used(parse("--split", "test=1"), num_classes=10)
    with pytest.raises(JobInputError, match="--shards 3: applies to the splits in --partition-splits"):
        check_options_used(parse("--split", "test=1", "--shards", "3"), num_classes=10)
