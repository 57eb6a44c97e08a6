"""The word count's input files: which files a job reads, and the byte ranges its map tasks read.

Driver: :func:`resolve_inputs` expands files, directories and globs and refuses missing or empty
input before any Spark work starts; :func:`byte_splits` cuts local files into one byte range per
``arrow`` map task. The corpus job expands and splits its inputs with the same two functions.

Spark's Python workers: :func:`read_split`, called by the ``arrow`` engine's map tasks, reads the
lines of one range in blocks.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from spark_jobs.common.errors import JobInputError

# Bytes read per block when a task reads its split itself: big enough that per-call overhead vanishes,
# small enough that a block's copies (bytes, str, Arrow tokens) stay well under 100 MB.
CHUNK_BYTES = 8 << 20
DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open}


def has_scheme(path: str) -> bool:
    """True for a URI that Python cannot open itself (``hdfs://``, ``s3a://``); ``file:`` is local."""
    return "://" in path and not path.startswith("file:")


def _visible_files(directory: Path) -> list[Path]:
    # Hidden and "_"-prefixed files are Spark/Hadoop bookkeeping (_SUCCESS, .crc), never text.
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [Path(root) / f for f in sorted(files) if not f.startswith((".", "_"))]
    return found


def resolve_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand files, directories and globs to a sorted list of files; raise on anything missing.

    Paths with a URI scheme (``hdfs://``, ``s3a://``) are passed to Spark unchecked.
    """
    if not inputs:
        raise JobInputError("no input given: pass one or more files, directories or globs, or --demo")
    files: list[str] = []
    for item in inputs:
        if has_scheme(item):
            files.append(item)
            continue
        local = item[len("file://") :] if item.startswith("file://") else item
        matches = (
            sorted(glob.glob(os.path.expanduser(local), recursive=True)) if glob.has_magic(local) else [local]
        )
        if not matches:
            raise JobInputError(
                f"input {item}: no file matches this pattern; check the path or quote the glob"
            )
        for match in matches:
            path = Path(match).expanduser()
            if path.is_dir():
                found = _visible_files(path)
                if not found:
                    raise JobInputError(
                        f"input {path}: directory holds no files; add text files or remove it"
                    )
                files += [str(p.absolute()) for p in found]
            elif path.is_file():
                files.append(str(path.absolute()))
            else:
                raise JobInputError(f"input {path}: no such file or directory; check the path")
    unique = list(dict.fromkeys(files))
    if not any(has_scheme(f) or not _is_empty(f) for f in unique):
        shown = unique[0] if len(unique) == 1 else f"{unique[0]} (and {len(unique) - 1} more)"
        raise JobInputError(f"input {shown}: empty input, nothing to count; pass a non-empty text file")
    return unique


def _is_empty(path: str) -> bool:
    if os.path.getsize(path) == 0:
        return True
    opener = DECOMPRESSORS.get(Path(path).suffix)
    if opener is None:
        return False
    try:
        with opener(path, "rb") as handle:
            return handle.read(1) == b""
    except (OSError, EOFError) as exc:
        raise JobInputError(f"input {path}: cannot decompress ({exc}); check the file") from None


def byte_splits(files: Sequence[str], parallelism: int) -> list[tuple[str, int, int]]:
    """(path, start, end) ranges like Spark's file splits: about total / parallelism bytes each,
    between 4 MB and 128 MB; compressed files are one split (end -1: read to the end)."""
    sizes = {f: os.path.getsize(f) for f in files}
    target = min(128 << 20, max(4 << 20, sum(sizes.values()) // max(parallelism, 1) + 1))
    splits: list[tuple[str, int, int]] = []
    for path, size in sizes.items():
        if path.endswith((".gz", ".bz2")):
            splits.append((path, 0, -1))
        else:
            splits += [(path, start, min(start + target, size)) for start in range(0, size, target)]
    return splits


def read_split(path: str, start: int, end: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The lines that start in bytes ``[start, end)`` of ``path``, in blocks of whole lines.

    Hadoop's rule, so that adjacent splits share no line and miss none: a split that does not begin
    at a line start skips to the next one, and the last line runs past ``end`` to its terminator.
    ``end < 0`` means the whole file; ``.gz``/``.bz2`` files are read whole and decompressed.
    """
    opener = DECOMPRESSORS.get(os.path.splitext(path)[1], open)
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
