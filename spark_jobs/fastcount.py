"""Counting words in Arrow batches of lines: the map side (with its combiner) of the ``arrow`` engine.

No Spark here: a task hands in batches of raw line bytes and gets back (word, count) pairs for all of
them, plus the number of lines that held invalid UTF-8. Two routes give the same counts:

- Arrow compute kernels (C++, no Python object per token): split, flatten, ``value_counts``.
  ``utf8_split_whitespace`` splits on exactly the characters ``str.split()`` does (checked over every
  code point in the tests). For ``words``, Arrow's ``utf8_lower`` and a character class holding
  exactly the characters Python's ``\\w`` matches reproduce ``re.findall(r"\\w+", line.lower())``
  except on the few characters where Arrow's lower-casing differs from Python's (computed here, at
  run time, over every code point: full case mappings such as U+0130, the context-dependent
  final sigma, Unicode-version differences); a batch that contains any of them takes the Python route.
- Python (:mod:`spark_jobs.tokenizers`): the definition itself, for ``cjk``, for batches with a
  byte-order mark or invalid UTF-8, and for the characters above.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.tokenizers import decode_lines, get_tokenizer

BOM_BYTES = "\ufeff".encode()
# Merge the per-batch partial counts once this many (word, count) rows have piled up.
_COMPACT_ROWS = 2_000_000


def _ranges(codes: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in codes:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _re2_class(codes: Iterable[int], negate: bool = False) -> str:
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _ranges(codes))
    return f"[{'^' if negate else ''}{body}]"


def _all_chars() -> list[int]:
    return [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


@lru_cache(maxsize=1)
def _words_plan() -> tuple[str, re.Pattern[str]]:
    """(RE2 pattern that splits on non-word characters, Python pattern of characters Arrow lowers differently)."""
    codes = _all_chars()
    word = [c for c in codes if re.fullmatch(r"\w", chr(c))]
    python_lower = [chr(c).lower() for c in codes]
    arrow_lower = pc.utf8_lower(pa.array([chr(c) for c in codes])).to_pylist()
    differ = [c for c, p, a in zip(codes, python_lower, arrow_lower) if p != a]
    differ.append(0x03A3)  # capital sigma: Python lowers it to final or medial sigma by context
    unsafe = "".join(re.escape(chr(c)) for c in sorted(set(differ)))
    return _re2_class(word, negate=True) + "+", re.compile(f"[{unsafe}]")


def _joined_bytes(column: pa.Array) -> bytes:
    """All values of a binary Arrow column back to back, straight from its data buffer."""
    import numpy as np

    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=offset_type)
    start, end = int(offsets[column.offset]), int(offsets[column.offset + len(column)])
    return memoryview(column.buffers()[2])[start:end].tobytes()


class BatchCounter:
    """Counts for one task: feed it binary columns whose values are lines ending in ``\\n``."""

    def __init__(self, tokenizer: str, use_arrow: bool = True) -> None:
        self.tokenizer = tokenizer
        self.tokenize = get_tokenizer(tokenizer)
        self.use_arrow = use_arrow and tokenizer in ("whitespace", "words")
        self.counter: Counter[str] = Counter()
        self.partials: list[pa.Table] = []
        self.partial_rows = 0
        self.bad_lines = 0

    def add(self, lines: pa.Array) -> None:
        if len(lines) == 0:
            return
        blob = _joined_bytes(lines)
        if self.use_arrow and BOM_BYTES not in blob and self._add_arrow(lines, blob):
            return
        text, bad = decode_lines(blob)
        self.bad_lines += bad
        # Counter.update on a list counts in C; per-batch Counters merged in Python would not.
        self.counter.update(self.tokenize(text))

    def _add_arrow(self, lines: pa.Array, blob: bytes) -> bool:
        ascii_only = blob.isascii()
        decoded = ""
        if not ascii_only:
            try:
                decoded = blob.decode("utf-8")  # invalid lines need the Python route, which counts them
            except UnicodeDecodeError:
                return False
        text = lines.cast(pa.string())
        if self.tokenizer == "whitespace":
            tokens = pc.list_flatten(pc.utf8_split_whitespace(text))
        elif ascii_only:
            # On ASCII, Python's lower() and \w are exactly these.
            tokens = pc.list_flatten(pc.split_pattern_regex(pc.ascii_lower(text), "[^a-z0-9_]+"))
        else:
            split_on, unsafe = _words_plan()
            if unsafe.search(decoded):
                return False
            tokens = pc.list_flatten(pc.split_pattern_regex(pc.utf8_lower(text), split_on))
        # Splitting leaves "" where a line starts or ends with a separator; those are not words.
        tokens = tokens.filter(pc.not_equal(tokens, ""))
        counts = pc.value_counts(tokens)
        self._add_partial(pa.table({"word": counts.field("values"), "count": counts.field("counts")}))
        return True

    def _add_partial(self, table: pa.Table) -> None:
        self.partials.append(table)
        self.partial_rows += table.num_rows
        if self.partial_rows > _COMPACT_ROWS:
            merged = self._merged_partials()
            self.partials, self.partial_rows = [merged], merged.num_rows

    def _merged_partials(self) -> pa.Table:
        table = pa.concat_tables(self.partials)
        summed = table.group_by("word").aggregate([("count", "sum")])
        return pa.table({"word": summed["word"], "count": summed["count_sum"]})

    def result(self) -> pa.RecordBatch:
        """All counts so far as one batch (``word`` string, ``count`` int64).

        The row with a null word carries the number of lines with invalid UTF-8.
        """
        if self.counter:
            self.partials.append(
                pa.table(
                    {
                        "word": pa.array(list(self.counter.keys()), pa.string()),
                        "count": pa.array(list(self.counter.values()), pa.int64()),
                    }
                )
            )
        self.partials.append(
            pa.table({"word": pa.array([None], pa.string()), "count": pa.array([self.bad_lines], pa.int64())})
        )
        merged = self._merged_partials() if len(self.partials) > 1 else self.partials[0]
        merged = merged.cast(pa.schema([("word", pa.string()), ("count", pa.int64())]))
        return merged.combine_chunks().to_batches()[0]
