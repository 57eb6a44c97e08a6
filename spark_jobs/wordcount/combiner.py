"""The in-mapper combiner of the ``arrow`` engine: one map task's blocks of lines to (word, count).

Runs in Spark's Python workers: the engine's ``mapInArrow`` functions
(:mod:`spark_jobs.wordcount.engines`) build one :class:`BatchCounter` per task, and the corpus job
uses it to count the words of a ``words:V`` vocabulary. No Spark here.

A task hands in blocks of whole lines (an Arrow column of line bytes from Spark's text reader, or raw
bytes it read from its own byte range of a file with :func:`spark_jobs.wordcount.inputs.read_split`)
and gets back (word, count) pairs for all of them, plus the number of lines that held invalid UTF-8.
Each block is tokenized and counted per task, so the Python cost is per block of megabytes, not per
line or per token: ``whitespace`` and ``words`` blocks that are valid UTF-8 (nearly all) are
rewritten as bytes and split and counted by Arrow's C++ kernels
(:mod:`spark_jobs.wordcount.block_count`); other blocks are decoded line by line first (U+FFFD for
invalid bytes); ``cjk`` blocks are counted by the tokenizer's definition
(:mod:`spark_jobs.wordcount.tokenizers`) into one ``Counter``.

Tried and dropped (numbers in docs/benchmarks.md): ``utf8_split_whitespace`` gave non-deterministic
tokens at the end of a string (pyarrow 26 reads past the string there), an exact RE2 split was no
faster than ``str.split`` + ``Counter``, and ``value_counts`` took about twice the CPU time of a
single-threaded ``group_by`` count.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from spark_jobs.wordcount.block_count import (
    COUNTS_SCHEMA,
    VECTORISED,
    count_block,
    count_utf8_block,
    merge_counts,
)
from spark_jobs.wordcount.tokenizers import decode_lines, get_tokenizer

# Per-block count tables are merged once they hold this many rows, bounding a task's memory.
COMPACT_ROWS = 4_000_000


def _joined_bytes(column: pa.Array) -> bytes:
    """All values of a binary Arrow column back to back, straight from its data buffer."""
    import numpy as np

    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=offset_type)
    start, end = int(offsets[column.offset]), int(offsets[column.offset + len(column)])
    return memoryview(column.buffers()[2])[start:end].tobytes()


class BatchCounter:
    """Counts for one task (the in-mapper combiner): feed it blocks of lines, then take :meth:`result`."""

    def __init__(self, tokenizer: str) -> None:
        self.tokenizer = tokenizer
        self.tokenize = get_tokenizer(tokenizer)
        self.counter: Counter[str] = Counter()
        self.tables: list[pa.Table] = []
        self.table_rows = 0
        self.bad_lines = 0

    def add(self, lines: pa.Array) -> None:
        """Count a binary column whose values are lines ending in ``\\n``."""
        if len(lines):
            self.add_blob(_joined_bytes(lines))

    def add_blob(self, blob: bytes) -> None:
        """Count whole lines given as one block of bytes (line terminators included)."""
        if not blob:
            return
        if self.tokenizer in VECTORISED:
            # Valid UTF-8 (nearly every block) is counted from its bytes, never built into a str.
            table = count_utf8_block(blob, self.tokenizer)
            if table is None:
                text, bad = decode_lines(blob)
                self.bad_lines += bad
                table = count_block(text, self.tokenizer)
            self._add_table(table)
            return
        text, bad = decode_lines(blob)
        self.bad_lines += bad
        # Counter.update on a list counts in C; per-block Counters merged in Python would not.
        self.counter.update(self.tokenize(text))

    def _add_table(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.table_rows += table.num_rows
        if self.table_rows > COMPACT_ROWS:
            self.tables = [merge_counts(self.tables)]
            self.table_rows = self.tables[0].num_rows

    def result(self) -> pa.RecordBatch:
        """All counts as one batch (``word`` string, ``count`` int64).

        The row with a null word carries the number of lines with invalid UTF-8.
        """
        tables = list(self.tables)
        if self.counter:
            tables.append(pa.table([list(self.counter), list(self.counter.values())], schema=COUNTS_SCHEMA))
        tables.append(pa.table([[None], [self.bad_lines]], schema=COUNTS_SCHEMA))
        merged = merge_counts(tables)
        return pa.RecordBatch.from_arrays(
            [merged["word"].combine_chunks(), merged["count"].combine_chunks()], names=["word", "count"]
        )
