"""Output directories that are either complete or absent, never overlapping the job's inputs.

Jobs write into a hidden sibling directory and rename it into place only after Spark's write
succeeded, so a crashed or killed job never leaves something at the output path that looks done.
Every writing job also refuses an output that is, contains, or lies inside one of its inputs
(:func:`check_no_overlap`): replacing such an output with ``--overwrite`` would delete the input.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from contracts.atomic import staging_sibling
from spark_jobs.common.errors import JobFailure, JobInputError, storage_error
from spark_jobs.common.locks import output_lock


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
    """Refuse an existing output unless ``overwrite``, and an unwritable location; return the absolute
    local path."""
    target = local_path(path)
    if target.exists() and not overwrite:
        raise JobInputError(f"{flag} {target} already exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise JobInputError(
            f"{flag} {target} exists and is not a directory; remove it or choose another path"
        )
    check_writable(target, flag)
    return target


def check_writable(target: Path, flag: str = "--output") -> None:
    """Refuse a target whose nearest existing ancestor cannot take new entries (read-only or forbidden).

    ``os.access`` answers for read-only mounts (EROFS) and permissions alike, before anything is written.
    """
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise JobInputError(f"{flag} {target}: {existing} is not a directory; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_mount(existing) else "permission denied"
        raise JobInputError(
            f"{flag} {target}: cannot write in {existing} ({reason}); choose a writable location"
        )


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def input_paths(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, list[Path]]]:
    """Each local input as given, with the absolute paths it names (a glob: its matches).

    Inputs with a URI scheme other than ``file:`` (``hdfs://``, ``s3a://``) cannot overlap a local
    output and are left out.
    """
    named: list[tuple[str, list[Path]]] = []
    for item in inputs:
        text = str(item)
        if not text:
            continue
        if text.startswith("file:"):
            text = str(local_path(text))
        elif "://" in text:
            continue
        text = os.path.expanduser(text)
        matches = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) else [text]
        named.append((str(item), [Path(m).absolute() for m in matches]))
    return named


def check_no_overlap(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    flag: str = "--output",
    what: str = "input",
) -> None:
    """Refuse (exit 2) an output that is, contains, or lies inside any of ``inputs``.

    Inputs are files, directories or globs. Both the paths as written and their real paths (symlinks
    resolved) are compared, so a link to the output, or an output reached through a link, is caught.
    ``what`` names the inputs in the message (``input``, ``data.shards``, ``--source``).
    """
    target = local_path(output)
    out_forms = {target, Path(os.path.realpath(target))}
    for given, paths in input_paths(inputs):
        for path in paths:
            for inp in {path, Path(os.path.realpath(path))}:
                for out in out_forms:
                    relation = _relation(out, inp)
                    if relation:
                        raise JobInputError(
                            f"{flag} {target} {relation} the {what} {given}; an output must not overlap "
                            f"what the job reads (replacing it would delete that): choose another {flag}"
                        )


def _relation(output: Path, inp: Path) -> str | None:
    if output == inp:
        return "is"
    if inp.is_relative_to(output):
        return "contains"
    if output.is_relative_to(inp):
        return "lies inside"
    return None


def remove_staging(staging: Path, settle_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Remove a failed job's staging directory, and keep removing it while it reappears.

    When one Spark task fails, the job fails at once, but its other running tasks are cancelled
    asynchronously and a Python worker may finish writing its file after the first removal; the
    directory counts as gone once it has stayed gone for ``settle_s``.
    """
    if not staging.exists():
        return  # the job failed before anything was written
    deadline = time.monotonic() + limit_s
    while True:
        shutil.rmtree(staging, ignore_errors=True)
        time.sleep(settle_s)
        if not staging.exists() or time.monotonic() > deadline:
            return


@contextmanager
def staged_output(
    path: str | Path,
    overwrite: bool,
    flag: str = "--output",
    inputs: Iterable[str | os.PathLike] = (),
) -> Iterator[Path]:
    """Yield a temporary directory path next to ``path``; move it into place when the block succeeds.

    Holds the output's lock (:mod:`spark_jobs.common.locks`) throughout, and refuses an output that
    overlaps ``inputs``. On any exception the temporary directory is removed and an existing output
    is left untouched; a full disk or an unwritable location becomes one ``error:`` line.
    """
    target = local_path(path)
    with output_lock(target, flag):
        check_no_overlap(target, inputs, flag)
        check_output(target, overwrite, flag)
        staging = staging_sibling(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            yield staging
        except Exception as exc:
            remove_staging(staging)
            one_line = storage_error(exc, f"{flag} {target}", under=str(target.parent))
            if one_line is not None and not isinstance(exc, (JobInputError, JobFailure)):
                raise one_line from exc
            raise
        except BaseException:
            remove_staging(staging)
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
