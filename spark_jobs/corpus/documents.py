"""Documents from text, JSONL and Parquet files, read by the executors themselves.

The driver only plans reads (:func:`plan_reads`: one task per file, or per byte range of a plain
text file when documents are lines); :func:`read_task` runs in Spark's Python workers
(``mapInArrow``) and turns each task into rows ``doc_id, source, offset, text``.

Text is decoded as the word count decodes it: invalid UTF-8 becomes U+FFFD line by line, CRLF and a
lone CR end lines like LF (documents hold ``\\n`` only), and a byte-order mark at a line start is
dropped. ``offset`` is the byte offset of the document in its (decompressed) file, or the row index
for Parquet; ``doc_id`` is ``file_index << 40 | offset`` with files in sorted input order, so ids are
stable across reruns and ordering by them is corpus order.

Bad input found in a worker (a JSONL line that is not JSON, a missing field) is raised as
:class:`DocumentError`, whose message carries :data:`INPUT_ERROR_MARK`; the driver turns it back into
a one-line :class:`~spark_jobs.common.errors.JobInputError` with :func:`input_errors`.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from contracts.wordsplit import strip_line_boms
from spark_jobs.common.errors import JobInputError
from spark_jobs.corpus.keys import DocumentKeys
from spark_jobs.corpus.options import DocSpec
from spark_jobs.wordcount.tokenizers import decode_lines

DOCS_SCHEMA = pa.schema(
    [("doc_id", pa.int64()), ("source", pa.string()), ("offset", pa.int64()), ("text", pa.string())]
)
DOCS_DDL = "doc_id long, source string, offset long, text string"
OFFSET_BITS = 40
INPUT_ERROR_MARK = "corpus-input-error: "
# Rows per Arrow batch a reading task yields, and bytes per read of a byte range.
BATCH_DOCS = 4096
CHUNK_BYTES = 8 << 20

_LINE_END = re.compile(rb"\r\n|\r|\n")
# A paragraph ends at a line break followed by one or more blank (or space/tab-only) lines.
# (A CR followed by LF is one CRLF break, never a CR break and then an LF one.)
_BREAK = rb"(?:\r\n|\r(?!\n)|\n)"
_PARAGRAPH_BREAK = re.compile(_BREAK + rb"(?:[ \t]*" + _BREAK + rb")+")


class DocumentError(ValueError):
    """Bad input met by a reading task; the driver reports it as a JobInputError."""

    def __init__(self, message: str) -> None:
        super().__init__(INPUT_ERROR_MARK + message)


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn a DocumentError raised in a Spark worker into a one-line JobInputError on the driver."""
    try:
        yield
    except JobInputError:
        raise
    except Exception as exc:
        text = str(exc)
        at = text.find(INPUT_ERROR_MARK)
        if at < 0:
            raise
        raise JobInputError(text[at + len(INPUT_ERROR_MARK) :].splitlines()[0]) from None


def doc_id(file_index: int, offset: int) -> int:
    return (file_index << OFFSET_BITS) | offset


# ---------------------------------------------------------------- driver: planning


def plan_reads(files: Sequence[str], docs: DocSpec, parallelism: int) -> list[tuple[str, int, int, int]]:
    """(path, file_index, start, end) tasks; ``end = -1`` reads the whole file."""
    if docs.unit == "line":
        from spark_jobs.wordcount.inputs import byte_splits

        index = {path: i for i, path in enumerate(files)}
        return [(p, index[p], s, e) for p, s, e in byte_splits(files, parallelism)]
    return [(path, i, 0, -1) for i, path in enumerate(files)]


def check_parquet_column(files: Sequence[str], column: str) -> None:
    """Every Parquet input has ``column`` as a string column (reads footers only)."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise JobInputError(
                f"input {path}: not a Parquet file ({exc}); pass --docs to match the input"
            ) from None
        if column not in schema.names:
            raise JobInputError(
                f"--docs parquet:{column}: {path} has no column {column!r}; columns are {', '.join(schema.names)}"
            )
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise JobInputError(
                f"--docs parquet:{column}: column {column!r} of {path} is {kind}, not a string"
            )


# ---------------------------------------------------------------- workers: reading


def normalize_text(raw: bytes) -> str:
    """Decode like the word count and end every line with ``\\n``."""
    text, _ = decode_lines(raw)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return strip_line_boms(text)


def _open(path: str):
    return {".gz": gzip.open, ".bz2": bz2.open}.get(os.path.splitext(path)[1], open)(path, "rb")


def owned_blocks(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, block) for the lines that start in ``[start, end)``, as the word count splits a file."""
    with _open(path) as handle:
        if start > 0:
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                handle.readline()
        while end < 0 or handle.tell() < end:
            position = handle.tell()
            block = handle.read(CHUNK_BYTES if end < 0 else min(CHUNK_BYTES, end - position))
            if not block:
                return
            if not block.endswith(b"\n"):
                block += handle.readline()
            yield position, block


def _lines(offset: int, block: bytes) -> Iterator[tuple[int, bytes]]:
    position = 0
    for match in _LINE_END.finditer(block):
        yield offset + position, block[position : match.start()]
        position = match.end()
    if position < len(block):
        yield offset + position, block[position:]


def _paragraphs(blob: bytes) -> Iterator[tuple[int, bytes]]:
    position = 0
    for match in [*_PARAGRAPH_BREAK.finditer(blob), None]:
        stop = match.start() if match else len(blob)
        piece = blob[position:stop]
        stripped = piece.lstrip(b"\r\n")
        yield position + len(piece) - len(stripped), stripped.rstrip(b"\r\n")
        if match:
            position = match.end()


def _text_documents(path: str, start: int, end: int, unit: str) -> Iterator[tuple[int, str]]:
    if unit == "line":
        for block_offset, block in owned_blocks(path, start, end):
            for offset, raw in _lines(block_offset, block):
                yield offset, normalize_text(raw)
        return
    with _open(path) as handle:
        blob = handle.read()
    if unit == "file":
        yield 0, normalize_text(blob)
    else:
        for offset, raw in _paragraphs(blob):
            yield offset, normalize_text(raw)


def _jsonl_documents(path: str, field: str) -> Iterator[tuple[int, str]]:
    line_no = 0
    for block_offset, block in owned_blocks(path, 0, -1):
        for offset, raw in _lines(block_offset, block):
            line_no += 1
            if not raw.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(strip_line_boms(raw.decode("utf-8", errors="replace")))
            except json.JSONDecodeError as exc:
                raise DocumentError(
                    f"{where}: not JSON ({exc.msg}); fix or remove the line (every line must be one JSON object)"
                ) from None
            if not isinstance(record, dict) or field not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise DocumentError(f"--docs jsonl:{field}: {where} has no field {field!r} (it has: {keys})")
            value = record[field]
            if value is None:
                continue
            if not isinstance(value, str):
                raise DocumentError(
                    f"--docs jsonl:{field}: {where}: {field!r} is {type(value).__name__}, not text"
                )
            yield offset, value


def _parquet_documents(path: str, column: str) -> Iterator[tuple[int, str]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=BATCH_DOCS):
        for i, value in enumerate(batch.column(0).to_pylist()):
            if value is not None:
                yield row + i, value
        row += batch.num_rows


def task_documents(path: str, file_index: int, start: int, end: int, docs: DocSpec) -> Iterator[tuple]:
    """(doc_id, source, offset, text) of one read task; empty and blank documents are skipped."""
    if docs.unit == "jsonl":
        found = _jsonl_documents(path, docs.field or "")
    elif docs.unit == "parquet":
        found = _parquet_documents(path, docs.field or "")
    else:
        found = _text_documents(path, start, end, docs.unit)
    for offset, text in found:
        if text and not text.isspace():
            yield doc_id(file_index, offset), path, offset, text


def document_batches(
    docs: DocSpec,
    tasks: Sequence[tuple[str, int, int, int]],
    indexes: Iterable[int],
    keys: DocumentKeys | None,
) -> Iterator[pa.RecordBatch]:
    """Batches of the documents of ``tasks[i]`` for each ``i`` in ``indexes``: DOCS_SCHEMA, then the
    columns of ``keys`` when given (:mod:`spark_jobs.corpus.keys`)."""
    key_columns = keys.maker() if keys else None

    def batch_of(rows: list[tuple]) -> pa.RecordBatch:
        batch = _batch(rows)
        if key_columns is None:
            return batch
        extra = key_columns([row[3] for row in rows])
        return pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=schema_with(keys))

    rows: list[tuple] = []
    for index in indexes:
        for row in task_documents(*tasks[index], docs):
            rows.append(row)
            if len(rows) >= BATCH_DOCS:
                yield batch_of(rows)
                rows = []
    if rows:
        yield batch_of(rows)


def schema_with(keys: DocumentKeys | None) -> pa.Schema:
    return pa.schema([*DOCS_SCHEMA, *keys.fields]) if keys else DOCS_SCHEMA


def _task_numbers(batches: Iterator[pa.RecordBatch]) -> Iterator[int]:
    for batch in batches:
        yield from batch.column(0).to_pylist()


def read_task(docs: DocSpec, tasks: Sequence[tuple[str, int, int, int]], keys: DocumentKeys | None = None):
    """The ``mapInArrow`` function: task numbers in (indexes into ``tasks``, the list of
    :func:`plan_reads`, which travels with the function), document rows out: DOCS_DDL, followed by
    ``keys.ddl`` when ``keys`` is given."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from document_batches(docs, tasks, _task_numbers(batches), keys)

    return read


def read_to_files_task(
    docs: DocSpec, tasks: Sequence[tuple[str, int, int, int]], keys: DocumentKeys | None, directory: str
):
    """Like :func:`read_task`, but each Spark partition writes its rows to one Parquet file of its
    own in ``directory`` (``part-NNNNN.parquet``, by partition number) and returns only
    ``file string, rows long``.

    The worker writes the file with pyarrow: the rows never cross into the JVM, which would
    otherwise convert every text from Arrow and encode it into Parquet again. The file appears
    under its name only when complete (written aside, then renamed); a retried task writes the
    same bytes under the same name. It is uncompressed, without dictionaries: a work file read once
    or twice on the same machine, where compressing costs more than it saves.
    """

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        context = TaskContext.get()
        part = context.partitionId() if context else 0
        name = f"part-{part:05d}.parquet"
        final = os.path.join(directory, name)
        # Spark's reader skips "_" folders, so an attempt that died midway leaves nothing it reads.
        aside = os.path.join(directory, "_attempts", f"{name}.{context.attemptNumber() if context else 0}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        rows = 0
        with pq.ParquetWriter(aside, schema_with(keys), compression="none", use_dictionary=False) as out:
            for batch in document_batches(docs, tasks, _task_numbers(batches), keys):
                out.write_batch(batch)
                rows += batch.num_rows
        os.replace(aside, final)
        yield pa.RecordBatch.from_arrays(
            [pa.array([final]), pa.array([rows], pa.int64())], names=["file", "rows"]
        )

    return read


def _batch(rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, DOCS_SCHEMA, strict=True)],
        schema=DOCS_SCHEMA,
    )
