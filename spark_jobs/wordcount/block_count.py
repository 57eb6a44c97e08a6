"""Vectorised counting of one block of text for the ``whitespace`` and ``words`` tokenizers.

Runs in Spark's Python workers, called by the ``arrow`` engine's combiner
(:class:`spark_jobs.wordcount.combiner.BatchCounter`); nothing here touches Spark.

Python's per-token work (building a list of millions of ``str`` objects, then ``Counter.update``)
is what limits a word count written in Python. Here a block is rewritten so that every separator
becomes one ASCII space, and Arrow's C++ kernels split it and count the distinct words
(``split_pattern``, then a single-threaded hash ``group_by`` counting rows). The rewrite keeps the
tokenizers' exact semantics:

- ``whitespace`` (``str.split()``): the non-ASCII whitespace characters present in the block (19 of
  them in Python's Unicode tables, usually none present) are replaced by spaces; one
  ``bytes.translate`` maps the ASCII whitespace bytes (``\\t\\n\\v\\f\\r\\x1c-\\x1f``) to spaces.
- ``words`` (``re.findall(r"\\w+", text.lower())``): the block is lowercased by Python, the distinct
  non-ASCII characters of the result that ``\\w`` does not match are replaced by spaces, and one
  ``bytes.translate`` maps every ASCII byte outside ``[a-z0-9_]`` to a space. Bytes >= 0x80 are
  parts of non-ASCII characters that ``\\w`` matches, so they stay inside words. An ASCII block
  needs no ``str`` at all: one table lowercases and separates in the same pass.

:func:`count_utf8_block` does this on the UTF-8 bytes a task read (valid UTF-8 is checked by Arrow;
replacing a character's bytes is exact because UTF-8 is self-synchronising); :func:`count_block`
on a decoded ``str``, for blocks that held invalid bytes. Splitting on single spaces yields empty
strings between adjacent separators; they are dropped. Only Python's own ``str.lower``,
``str.isspace`` and ``re`` decide what a character is, so the Unicode version is Python's, exactly as
in :mod:`spark_jobs.wordcount.tokenizers`.
"""

from __future__ import annotations

import re
import sys

import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.wordcount.tokenizers import BOM, strip_line_boms

VECTORISED = ("whitespace", "words")
COUNTS_SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])

_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_WORD_CHAR = re.compile(r"\w")
_SPACE = 0x20
_MAX_STRING_BYTES = 2**31 - 1
# Py_UNICODE_ISSPACE for ASCII: \t \n \v \f \r, the four information separators and the space.
_ASCII_WHITESPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
_WHITESPACE_TABLE = bytes.maketrans(_ASCII_WHITESPACE, b" " * len(_ASCII_WHITESPACE))
_ASCII_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")
_NON_WORD_TABLE = bytes(b if b >= 0x80 or b in _ASCII_WORD else _SPACE for b in range(256))
# Every non-ASCII character Python's str.split() splits on, from this interpreter's own tables.
_NON_ASCII_WHITESPACE = tuple(c for c in map(chr, range(0x80, sys.maxunicode + 1)) if c.isspace())
_BOM_UTF8 = BOM.encode("utf-8")
_ASCII_BYTES = bytes(range(0x80))
_LOWER_NON_WORD_TABLE = bytes(
    b + 0x20 if 0x41 <= b <= 0x5A else b if b >= 0x80 or b in _ASCII_WORD else _SPACE for b in range(256)
)


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


def _as_one_string(data: bytes) -> pa.Array:
    """``data`` as a one-value Arrow string array, without copying it."""
    # 32-bit offsets whenever they fit: split_pattern is about 1.5x faster on them than on 64-bit ones.
    small = len(data) <= _MAX_STRING_BYTES
    string_type, offset_type = (pa.string(), pa.int32()) if small else (pa.large_string(), pa.int64())
    offsets = pa.array([0, len(data)], offset_type)
    return pa.Array.from_buffers(string_type, 1, [None, offsets.buffers()[1], pa.py_buffer(data)])


def _count_space_separated(data: bytes) -> pa.Table:
    """Distinct words and their counts in UTF-8 ``data`` whose only separator is the ASCII space."""
    if not data:
        return COUNTS_SCHEMA.empty_table()
    tokens = pc.list_flatten(pc.split_pattern(_as_one_string(data), " "))
    # Arrow's grouper hashes strings in about half the CPU time of value_counts; one thread, because
    # the other cores run the other map tasks.
    counted = (
        pa.table([tokens], names=["word"]).group_by("word", use_threads=False).aggregate([([], "count_all")])
    )
    words = counted["word"].combine_chunks().cast(pa.string())
    counts = counted["count_all"].combine_chunks()
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


def _is_valid_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        _as_one_string(data).validate(full=True)  # Arrow's UTF-8 check: no str is built
    except pa.ArrowInvalid:
        return False
    return True


def _distinct_non_ascii(data: bytes) -> set[str]:
    """The distinct non-ASCII characters of valid UTF-8 ``data``."""
    if data.isascii():
        return set()
    # Deleting the ASCII bytes leaves whole multi-byte characters, usually a small fraction of the block;
    # one byte search per candidate character over the whole block would cost far more.
    return set(data.translate(None, _ASCII_BYTES).decode("utf-8"))


def _lowered_words_only(data: bytes) -> bytes:
    """Valid UTF-8 ``data`` lowercased by Python, with every non-word character turned into a space."""
    if data.isascii():
        # For ASCII text str.lower() maps exactly A-Z to a-z: one table does both steps.
        return data.translate(_LOWER_NON_WORD_TABLE)
    lowered = data.decode("utf-8").lower().encode("utf-8")
    for char in _distinct_non_ascii(lowered):
        if not _WORD_CHAR.fullmatch(char):
            lowered = lowered.replace(char.encode("utf-8"), b" ")  # self-synchronising, as above
    return lowered.translate(_NON_WORD_TABLE)


def count_utf8_block(data: bytes, tokenizer: str) -> pa.Table | None:
    """:func:`count_block` of ``data.decode()``, working on the bytes themselves where it can.

    None when ``data`` is not valid UTF-8: the caller then decodes it line by line (U+FFFD, and a
    count of the lines that held invalid bytes).
    """
    if not _is_valid_utf8(data):
        return None
    if tokenizer == "whitespace":
        if _BOM_UTF8 in data:
            # Only blocks holding a file's start have one: the str route strips BOMs at line starts.
            return count_block(data.decode("utf-8"), tokenizer)
        for char in _distinct_non_ascii(data).intersection(_NON_ASCII_WHITESPACE):
            # UTF-8 is self-synchronising: the bytes of a character match nowhere but at that character.
            data = data.replace(char.encode("utf-8"), b" ")
        return _count_space_separated(data.translate(_WHITESPACE_TABLE))
    if tokenizer == "words":
        return _count_space_separated(_lowered_words_only(data))
    raise ValueError(f"tokenizer {tokenizer!r} has no vectorised form; use one of {VECTORISED}")


def merge_counts(tables: list[pa.Table]) -> pa.Table:
    """Sum the counts of equal words across tables (the combiner's final step, in C++)."""
    if not tables:
        return COUNTS_SCHEMA.empty_table()
    if len(tables) == 1:
        return tables[0]
    summed = pa.concat_tables(tables).group_by("word", use_threads=False).aggregate([("count", "sum")])
    return pa.table([summed["word"], summed["count_sum"]], schema=COUNTS_SCHEMA)
