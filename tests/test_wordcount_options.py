"""WordCountOptions refuses bad values with a message naming the option and what to pass; no Spark."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.wordcount.cli import build_parser, options_from_args
from spark_jobs.wordcount.options import WordCountOptions


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("top", -1, "--top -1: must be >= 0 (0 prints no words)"),
        ("min_count", 0, "--min-count 0: must be >= 1 (1 keeps every word)"),
        (
            "tokenizer",
            "chars",
            "--tokenizer 'chars': not one of the choices; pass one of whitespace, words, cjk",
        ),
        ("engine", "spark", "--engine 'spark': not one of the choices; pass one of arrow, rdd, dataframe"),
        ("output_format", "xml", "--format 'xml': not one of the choices; pass one of parquet, csv, json"),
    ],
)
def test_bad_value_names_the_option(field: str, value: object, message: str) -> None:
    with pytest.raises(JobInputError) as err:
        WordCountOptions(output="out", inputs=["in.txt"], **{field: value})
    assert str(err.value) == message


def test_demo_with_inputs_says_which_to_drop() -> None:
    with pytest.raises(JobInputError, match=r"^--demo counts the embedded text; drop the INPUT paths"):
        WordCountOptions(output="out", inputs=["in.txt"], demo=True)


def test_command_line_becomes_the_same_options_as_python() -> None:
    argv = ["a.txt", "b.txt", "--output", "out", "--format", "csv", "--top", "3", "--engine", "rdd"]
    from_cli = options_from_args(build_parser().parse_args(argv))
    from_python = WordCountOptions(
        output="out", inputs=[Path("a.txt"), "b.txt"], output_format="csv", top=3, engine="rdd"
    )
    assert from_cli == from_python
    assert from_cli.inputs == ("a.txt", "b.txt")
