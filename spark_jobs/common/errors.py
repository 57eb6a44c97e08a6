"""User-facing errors: one line that names what is wrong and what to do.

Exit codes (docs/errors.md has the full table): 2 for the user's mistakes (:class:`JobInputError`),
1 for failures the user did not cause (:class:`JobFailure`: a full disk, a JVM that died).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1

# errno values that say "this location cannot take the output", with the advice that fixes each.
_DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)
# A failed job whose output filesystem has less free space than this failed for lack of it: a
# process that dies on a full disk often cannot even write down why (its error file needs space too).
NEARLY_FULL_BYTES = 64 * 1024
# The same conditions as the JVM (Hadoop's local filesystem) and Python workers spell them.
_DISK_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"No space left on device|\[Errno 28\]"), errno.ENOSPC),
    (re.compile(r"Disk quota exceeded|\[Errno 122\]"), errno.EDQUOT),
    (re.compile(r"Read-only file system|\[Errno 30\]"), errno.EROFS),
    (re.compile(r"Permission denied|\[Errno 13\]"), errno.EACCES),
)


class JobInputError(Exception):
    """Bad input detected before (or instead of) writing anything.

    The message is printed as a single ``error: ...`` line and the process exits with code 2.
    """


class JobFailure(Exception):
    """The job could not finish for a reason outside the user's input (full disk, lost JVM).

    The message is printed as a single ``error: ...`` line and the process exits with code 1.
    """


def storage_errno(exc: BaseException, under: str | None = None) -> int | None:
    """The errno of a storage problem (full disk, read-only, no permission) behind ``exc``, or None.

    Looks at ``OSError.errno`` along the exception chain and, for errors raised in the JVM or in a
    Python worker (which arrive as text), at the message. With ``under``, a read-only or permission
    error counts only when it names a path under that directory: reading an input can fail with
    "Permission denied" too, and that is not the output's problem.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            named = str(current.filename or "")
            if under is None or current.errno in _FULL or not named or named.startswith(under):
                return current.errno
        current = current.__cause__ or current.__context__
    text = str(exc)
    for pattern, code in _DISK_PATTERNS:
        if pattern.search(text) and (under is None or code in _FULL or under in text):
            return code
    return None


def storage_error(
    exc: BaseException, what: str, under: str | None = None
) -> JobInputError | JobFailure | None:
    """``exc`` as one line about ``what`` (e.g. ``--output /x``) when it is a storage problem, else None.

    A full disk or quota is a failure (exit 1); a read-only or forbidden location is the user's
    choice of path (exit 2). ``under``: see :func:`storage_errno`.
    """
    code = storage_errno(exc, under)
    if code is None:
        return None
    reason = _DISK_ERRNOS[code]
    if code in _FULL:
        return JobFailure(f"{what}: {reason} while writing; free some space or choose another location")
    return JobInputError(f"{what}: cannot write there ({reason}); choose a writable location")


def full_disk_error(path: str | os.PathLike, what: str) -> JobFailure | None:
    """One line when ``path``'s filesystem is (nearly) full, to explain a failure that left no reason."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        stats = os.statvfs(existing)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= NEARLY_FULL_BYTES:
        return None
    return JobFailure(
        f"{what}: no space left on device ({free // 1024} KiB free); free some space or choose another location"
    )
