"""Files that are either complete or absent: write to a temporary sibling, then ``os.replace``.

``os.replace`` is atomic on POSIX filesystems when source and target share a directory, so a
reader (or a crash) sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def _temporary_sibling(path: Path) -> Path:
    # pid plus a random tag: two threads of one process never share a temporary name.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; ``fsync`` also flushes it to the device first."""
    target = Path(path)
    tmp = _temporary_sibling(target)
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """UTF-8 text, written atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(path: str | os.PathLike, doc: Any, *, fsync: bool = False) -> Path:
    """Indented, key-sorted JSON (stable bytes for the same document), written atomically."""
    return write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n", fsync=fsync)


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure saved as PNG atomically (the temporary name keeps the .png suffix)."""
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}{target.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# Whole directories are staged the same way: written under a hidden sibling, renamed when complete.
_STAGING_MARK = ".staging-"


def staging_sibling(target: str | os.PathLike) -> Path:
    """A fresh hidden sibling of ``target`` to write a directory into before renaming it to ``target``."""
    path = Path(target)
    return path.with_name(f".{path.name}{_STAGING_MARK}{uuid.uuid4().hex[:8]}")


def final_path(path: str | os.PathLike) -> Path:
    """The directory that ``path`` becomes when it is a staging sibling (:func:`staging_sibling`);
    ``path`` itself otherwise. Ranks run on a staged ``run.dir`` and name the run by this."""
    given = Path(path)
    name, mark, tag = given.name.rpartition(_STAGING_MARK)
    if not mark or not name.startswith(".") or len(tag) != 8:
        return given
    return given.with_name(name[1:])
