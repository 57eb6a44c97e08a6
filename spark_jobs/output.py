"""Output directories that are either complete or absent.

Jobs write into a hidden sibling directory and rename it into place only after Spark's write
succeeded, so a crashed or killed job never leaves something at the output path that looks done.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spark_jobs.errors import JobInputError


def local_path(path: str | Path) -> Path:
    """Accept plain paths and ``file:`` URIs; other schemes are not supported for atomic output."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif text.startswith("file:"):
        text = text[len("file:") :]
    elif "://" in text:
        raise JobInputError(f"--output {text}: only local paths (or file:// URIs) are supported")
    return Path(text).expanduser().absolute()


def check_output(path: str | Path, overwrite: bool, flag: str = "--output") -> Path:
    """Refuse an existing output unless ``overwrite``; return the absolute local path."""
    target = local_path(path)
    if target.exists() and not overwrite:
        raise JobInputError(f"{flag} {target} already exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise JobInputError(f"{flag} {target} exists and is not a directory; remove it or choose another path")
    return target


@contextmanager
def staged_output(path: str | Path, overwrite: bool, flag: str = "--output") -> Iterator[Path]:
    """Yield a temporary directory path next to ``path``; move it into place when the block succeeds.

    On any exception the temporary directory is removed and an existing output is left untouched.
    """
    target = check_output(path, overwrite, flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not staging.exists():
        raise RuntimeError(f"job finished without writing {staging}")
    if target.exists():
        # Keep the old output until the new one is in place, then drop it.
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)
