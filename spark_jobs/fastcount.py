"""Counting words in Arrow batches of lines: the map side (with its combiner) of the ``arrow`` engine.

No Spark here: a task hands in batches of raw line bytes and gets back (word, count) pairs for all of
them, plus the number of lines that held invalid UTF-8. Two routes give the same counts:

- Arrow compute kernels (C++, no Python object per token): split, flatten, ``value_counts``.
  ``utf8_split_whitespace`` splits on exactly the characters ``str.split()`` does (checked over every
  code point in the tests). For ``words`` only pure-ASCII batches take this route: there
  ``ascii_lower`` and ``[a-z0-9_]`` are exactly Python's ``lower()`` and ``\\w``. Elsewhere Arrow's
  Unicode tables (another Unicode version, simple case mappings, no final-sigma rule) differ from
  Python's on a few characters; a version that checked each batch for them was measured no faster
  than the Python route, so it was dropped.
- Python (:mod:`spark_jobs.tokenizers`): the definition itself, for ``cjk``, for non-ASCII ``words``,
  and for batches with a byte-order mark or invalid UTF-8.
"""

from __future__ import annotations

import bz2
import gzip
import os
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.tokenizers import decode_lines, get_tokenizer

BOM_BYTES = "\ufeff".encode()
# Merge the per-batch partial counts once this many (word, count) rows have piled up.
_COMPACT_ROWS = 2_000_000
# Bytes read per block when a task reads its split itself: big enough that per-call overhead vanishes.
CHUNK_BYTES = 8 << 20


def _joined_bytes(column: pa.Array) -> bytes:
    """All values of a binary Arrow column back to back, straight from its data buffer."""
    import numpy as np

    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=offset_type)
    start, end = int(offsets[column.offset]), int(offsets[column.offset + len(column)])
    return memoryview(column.buffers()[2])[start:end].tobytes()


class BatchCounter:
    """Counts for one task (the in-mapper combiner): feed it blocks of lines, then take :meth:`result`."""

    def __init__(self, tokenizer: str, use_arrow: bool = True) -> None:
        self.tokenizer = tokenizer
        self.tokenize = get_tokenizer(tokenizer)
        self.use_arrow = use_arrow and tokenizer in ("whitespace", "words")
        self.counter: Counter[str] = Counter()
        self.partials: list[pa.Table] = []
        self.partial_rows = 0
        self.bad_lines = 0

    def add(self, lines: pa.Array) -> None:
        """Count a binary column whose values are lines ending in ``\\n``."""
        if len(lines):
            self.add_blob(_joined_bytes(lines))

    def add_blob(self, blob: bytes) -> None:
        """Count whole lines given as one block of bytes (line terminators included)."""
        if not blob:
            return
        if self.use_arrow and BOM_BYTES not in blob and self._add_arrow(blob):
            return
        text, bad = decode_lines(blob)
        self.bad_lines += bad
        # Counter.update on a list counts in C; per-batch Counters merged in Python would not.
        self.counter.update(self.tokenize(text))

    def _add_arrow(self, blob: bytes) -> bool:
        ascii_only = blob.isascii()
        if self.tokenizer == "words" and not ascii_only:
            return False
        if not ascii_only:
            try:
                # Validation only: lines with invalid bytes need the Python route, which counts them.
                blob.decode("utf-8")
            except UnicodeDecodeError:
                return False
        # The whole block as one string: line ends are separators for both tokenizers.
        text = pa.array([blob], pa.binary()).cast(pa.string())
        if self.tokenizer == "whitespace":
            tokens = pc.list_flatten(pc.utf8_split_whitespace(text))
        else:
            # On ASCII text, Python's lower() and \\w are exactly these.
            tokens = pc.list_flatten(pc.split_pattern_regex(pc.ascii_lower(text), "[^a-z0-9_]+"))
        # Splitting leaves "" where the block starts or ends with a separator; those are not words.
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


def read_split(path: str, start: int, end: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The lines that start in bytes ``[start, end)`` of ``path``, in blocks of whole lines.

    Hadoop's rule, so that adjacent splits share no line and miss none: a split that does not begin
    at a line start skips to the next one, and the last line runs past ``end`` to its terminator.
    ``end < 0`` means the whole file; ``.gz``/``.bz2`` files are read whole and decompressed.
    """
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(os.path.splitext(path)[1], open)
    with opener(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                handle.readline()
        while end < 0 or handle.tell() < end:
            budget = chunk_bytes if end < 0 else min(chunk_bytes, end - handle.tell())
            block = handle.read(budget)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += handle.readline()
            yield block
