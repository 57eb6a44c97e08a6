"""Vectorised counting of one block of text for the ``whitespace`` and ``words`` tokenizers.

Python's per-token work (building a list of millions of ``str`` objects, then ``Counter.update``)
is what limits a word count written in Python. Here a block is rewritten so that every separator
becomes one ASCII space, and Arrow's C++ kernels split it and count the distinct words
(``split_pattern`` + ``value_counts``). The rewrite keeps the tokenizers' exact semantics:

- ``whitespace`` (``str.split()``): the non-ASCII whitespace characters present in the block (19 of
  them in Python's Unicode tables, usually none present) are replaced by spaces in the ``str``; after UTF-8 encoding,
  one ``bytes.translate`` maps the ASCII whitespace bytes (``\\t\\n\\v\\f\\r\\x1c-\\x1f``) to spaces.
- ``words`` (``re.findall(r"\\w+", text.lower())``): the block is lowercased by Python, the distinct
  non-ASCII characters of the result that ``\\w`` does not match are replaced by spaces, and one
  ``bytes.translate`` maps every ASCII byte outside ``[a-z0-9_]`` to a space. Bytes >= 0x80 are
  parts of non-ASCII characters that ``\\w`` matches, so they stay inside words.

Splitting on single spaces yields empty strings between adjacent separators; they are dropped.
Only Python's own ``str.lower``, ``str.isspace`` and ``re`` decide what a character is, so the
Unicode version is Python's, exactly as in :mod:`spark_jobs.tokenizers`.
"""

from __future__ import annotations

import re
import sys

import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.tokenizers import strip_line_boms

VECTORISED = ("whitespace", "words")
COUNTS_SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])

_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_WORD_CHAR = re.compile(r"\w")
_SPACE = 0x20
# Py_UNICODE_ISSPACE for ASCII: \t \n \v \f \r, the four information separators and the space.
_ASCII_WHITESPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
_WHITESPACE_TABLE = bytes.maketrans(_ASCII_WHITESPACE, b" " * len(_ASCII_WHITESPACE))
_ASCII_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")
_NON_WORD_TABLE = bytes(b if b >= 0x80 or b in _ASCII_WORD else _SPACE for b in range(256))
# Every non-ASCII character Python's str.split() splits on, from this interpreter's own tables.
_NON_ASCII_WHITESPACE = tuple(c for c in map(chr, range(0x80, sys.maxunicode + 1)) if c.isspace())


def _spaces_for_unicode_whitespace(text: str) -> str:
    # `in` is a memchr-speed scan, and instant when the needle is wider than any character of text.
    for char in _NON_ASCII_WHITESPACE:
        if char in text:
            text = text.replace(char, " ")
    return text


def _spaces_for_non_word_chars(text: str) -> str:
    """Replace each distinct non-ASCII character of ``text`` that ``\\w`` does not match by a space."""
    if text.isascii():
        return text
    for char in set(_NON_ASCII.findall(text)):
        if not _WORD_CHAR.fullmatch(char):
            text = text.replace(char, " ")
    return text


def _count_space_separated(data: bytes) -> pa.Table:
    """Distinct words and their counts in UTF-8 ``data`` whose only separator is the ASCII space."""
    if not data:
        return COUNTS_SCHEMA.empty_table()
    offsets = pa.array([0, len(data)], pa.int64())
    block = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets.buffers()[1], pa.py_buffer(data)])
    tokens = pc.list_flatten(pc.split_pattern(block, " "))
    counted = pc.value_counts(tokens)
    words = counted.field("values").cast(pa.string())
    counts = counted.field("counts")
    keep = pc.not_equal(words, "")
    return pa.table([words.filter(keep), counts.filter(keep)], schema=COUNTS_SCHEMA)


def count_block(text: str, tokenizer: str) -> pa.Table:
    """(word, count) for every distinct token of ``text`` under ``tokenizer`` (one of :data:`VECTORISED`)."""
    if tokenizer == "whitespace":
        text = _spaces_for_unicode_whitespace(strip_line_boms(text))
        return _count_space_separated(text.encode("utf-8").translate(_WHITESPACE_TABLE))
    if tokenizer == "words":
        # U+FEFF is not \w: a BOM becomes a separator like any other non-word character.
        lowered = _spaces_for_non_word_chars(text.lower())
        return _count_space_separated(lowered.encode("utf-8").translate(_NON_WORD_TABLE))
    raise ValueError(f"tokenizer {tokenizer!r} has no vectorised form; use one of {VECTORISED}")


def merge_counts(tables: list[pa.Table]) -> pa.Table:
    """Sum the counts of equal words across tables (the combiner's final step, in C++)."""
    if not tables:
        return COUNTS_SCHEMA.empty_table()
    if len(tables) == 1:
        return tables[0]
    summed = pa.concat_tables(tables).group_by("word").aggregate([("count", "sum")])
    return pa.table([summed["word"], summed["count_sum"]], schema=COUNTS_SCHEMA)
