"""The word count's options as one typed, validated object (driver only).

:class:`WordCountOptions` holds every option of ``spark-collab wordcount`` that decides what is
counted and written; the Spark options (``--master``, ``--conf``, ``--spark-defaults``) choose the
session the job runs in and stay with the shared session code (:mod:`spark_jobs.common.session`).
The command line builds one from its arguments; Python callers build one directly. Either way an
invalid value is refused on construction with a :class:`~spark_jobs.common.errors.JobInputError` that
names the command-line option and says what to pass instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from spark_jobs.common.errors import JobInputError
from spark_jobs.wordcount.tokenizers import TOKENIZERS

ENGINES = ("arrow", "rdd", "dataframe")
FORMATS = ("parquet", "csv", "json")


@dataclass(frozen=True)
class WordCountOptions:
    """What one word count reads, how it counts, and what it writes."""

    output: str | os.PathLike[str]
    """``--output``: the directory the (word, count) table is written to."""
    inputs: Sequence[str] = field(default=())
    """``INPUT...``: files, directories or globs (``.gz``/``.bz2`` too); stored as a tuple of str."""
    demo: bool = False
    """``--demo``: count the Python documentation text that CPython ships instead of ``inputs``."""
    tokenizer: str = "words"
    """``--tokenizer``: how lines become words, one of :data:`TOKENIZERS`."""
    engine: str = "arrow"
    """``--engine``: how the count runs on Spark, one of :data:`ENGINES`."""
    output_format: str = "parquet"
    """``--format``: one of :data:`FORMATS`."""
    top: int = 0
    """``--top``: how many of the most frequent words the result carries (0: none)."""
    min_count: int = 1
    """``--min-count``: words seen fewer times are left out of the output."""
    overwrite: bool = False
    """``--overwrite``: replace an existing output directory."""

    def __post_init__(self) -> None:
        # A list or Path inputs are accepted and stored as a tuple of str, keeping the object hashable.
        object.__setattr__(self, "inputs", tuple(os.fspath(item) for item in self.inputs))
        _validate(self)


def _validate(options: WordCountOptions) -> None:
    """Refuse values the job cannot run with, naming the option and what to pass instead.

    The command line's own checks (choices, integers) run first, so from there only the ranges and
    the ``--demo`` conflict can fail here, in this order.
    """
    _check_choice("--tokenizer", options.tokenizer, TOKENIZERS)
    _check_choice("--engine", options.engine, ENGINES)
    _check_choice("--format", options.output_format, FORMATS)
    if options.top < 0:
        raise JobInputError(f"--top {options.top}: must be >= 0 (0 prints no words)")
    if options.min_count < 1:
        raise JobInputError(f"--min-count {options.min_count}: must be >= 1 (1 keeps every word)")
    if options.demo and options.inputs:
        raise JobInputError("--demo counts the embedded text; drop the INPUT paths or drop --demo")


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise JobInputError(f"{flag} {value!r}: not one of the choices; pass one of {', '.join(choices)}")
