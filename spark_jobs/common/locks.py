"""One job at a time per output: an exclusive lock on every output or run directory a job writes.

A job holds an ``fcntl.flock`` on a lock file beside its output (``.NAME.lock`` in the output's
parent directory) from its first look at the output until its result is in place. The lock sits
beside the output, not inside it, because staged outputs replace the whole directory when they
finish, and because one rule then serves every job: a ``train`` and a ``collab`` aimed at the same
``run.dir`` exclude each other as two word counts to one ``--output`` do.

The file records its holder (pid, host, start time, command), so a second job can say who holds
it. The kernel drops a flock when its process ends, however it ends (a crash, ``kill -9``), so a
lock file left behind by a dead job is recognised as stale by the lock itself and the next job
takes it over. On filesystems without ``flock`` (some network filesystems answer ENOLCK) the
recorded holder decides instead: a holder on this host whose pid is gone is stale; one on another
host is respected, and the message names the file to delete once that job is known to be gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spark_jobs.common.errors import JobFailure, JobInputError

# A lock file can vanish between our open and our flock (its holder removes it on release):
# retry that many times before giving up.
_OPEN_RETRIES = 20
_NO_FLOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class OutputLocked(JobInputError):
    """Another job holds the lock on this output (exit code 2, one line naming the holder)."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as recorded in the lock file."""

    pid: int
    host: str
    started: float
    command: str

    @classmethod
    def me(cls) -> Holder:
        command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))
        return cls(os.getpid(), socket.gethostname(), time.time(), command)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host}, since {since}: {self.command}"

    def is_alive_here(self) -> bool:
        """Whether this holder runs on this host and its process still exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


@dataclass(frozen=True)
class HeldLock:
    """A lock this process holds. ``stale``: the holder recorded by a dead job it took over."""

    path: Path
    stale: Holder | None


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output or run directory: ``.NAME.lock`` beside it."""
    path = Path(target)
    return path.parent / f".{path.name}.lock"


# Locks held by this process: path -> (thread ident, nesting depth, lock). flock locks belong to
# an open file, so a second open in the same process would refuse itself; nesting instead lets a
# job hold the lock for its whole life while the staged writer it calls takes it again.
_held: dict[Path, tuple[int, int, HeldLock]] = {}
_held_guard = threading.Lock()


@contextmanager
def output_lock(target: str | os.PathLike, flag: str = "--output") -> Iterator[HeldLock]:
    """Hold the lock of ``target`` (an absolute output or run directory path) for the block.

    Raises :class:`OutputLocked` naming the holder when another job holds it, and
    :class:`JobInputError` when no lock file can be made there (a read-only or forbidden
    location). Parent directories made for the lock file are removed again if nothing else was
    put in them, so a refused job leaves the filesystem as it found it.
    """
    path = lock_path(Path(target).absolute())
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(path)
        if entry is not None and entry[0] == me:
            _held[path] = (me, entry[1] + 1, entry[2])
    if entry is not None and entry[0] == me:
        try:
            yield entry[2]
        finally:
            with _held_guard:
                thread, depth, held = _held[path]
                _held[path] = (thread, depth - 1, held)
        return
    if entry is not None:
        raise OutputLocked(
            f"{flag} {target} is being written by another thread of this process; "
            f"wait for it or choose another {flag}"
        )
    made = _make_parents(path.parent, flag, target)
    try:
        fd, stale = _acquire(path, flag, target)
    except BaseException:
        _remove_empty(made)
        raise
    held = HeldLock(path, stale)
    with _held_guard:
        _held[path] = (me, 1, held)
    try:
        yield held
    finally:
        with _held_guard:
            del _held[path]
        _release(path, fd)
        _remove_empty(made)


def _make_parents(directory: Path, flag: str, target: str | os.PathLike) -> list[Path]:
    """Create ``directory`` and its missing parents; return those created (deepest first)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise _unwritable(flag, target, directory, exc) from None
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:  # deepest first
        try:
            directory.rmdir()
        except OSError:
            return  # not empty: the job's output is in it


def _unwritable(flag: str, target: str | os.PathLike, where: Path, exc: OSError) -> Exception:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return JobFailure(
            f"{flag} {target}: {reason.lower()} in {where}; free some space or choose another {flag}"
        )
    return JobInputError(
        f"{flag} {target}: cannot write in {where} ({reason.lower()}); choose a writable location"
    )


def _acquire(path: Path, flag: str, target: str | os.PathLike) -> tuple[int, Holder | None]:
    for _ in range(_OPEN_RETRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _unwritable(flag, target, path.parent, exc) from None
        try:
            locked = _try_flock(fd)
            recorded = _read_holder(fd)
            if locked is False:
                raise _locked_error(flag, target, path, recorded)
            if locked is None and recorded is not None and _respected(recorded):
                raise _locked_error(flag, target, path, recorded, without_flock=True)
            if not _still_at(fd, path):
                os.close(fd)  # its holder removed it on release: lock the file that is there now
                continue
            _write_holder(fd, flag, target, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd, recorded
    raise JobFailure(f"{flag} {target}: could not take the lock {path} (it kept changing); try again")


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK_ERRNOS:
            return None
        raise
    return True


def _respected(holder: Holder) -> bool:
    """Without flock: whether a recorded holder must be assumed alive."""
    if holder.pid == os.getpid() and holder.host == socket.gethostname():
        return False
    return holder.host != socket.gethostname() or holder.is_alive_here()


def _locked_error(
    flag: str, target: str | os.PathLike, path: Path, holder: Holder | None, without_flock: bool = False
) -> OutputLocked:
    who = holder.describe() if holder else "holder not recorded yet"
    hint = f"; if that job is gone, delete {path}" if without_flock else ""
    return OutputLocked(
        f"{flag} {target} is in use by another job ({who}); wait for it to finish or choose another {flag}{hint}"
    )


def _still_at(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        doc = json.loads(raw.decode("utf-8"))
        return Holder(int(doc["pid"]), str(doc["host"]), float(doc["started"]), str(doc["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # empty (just created) or unreadable: nobody recorded


def _write_holder(fd: int, flag: str, target: str | os.PathLike, path: Path) -> None:
    me = Holder.me()
    data = json.dumps({"pid": me.pid, "host": me.host, "started": me.started, "command": me.command})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data.encode("utf-8") + b"\n", 0)
    except OSError as exc:
        raise _unwritable(flag, target, path.parent, exc) from None


def _release(path: Path, fd: int) -> None:
    # Remove the file while still holding it: a job waiting on this very file then sees that it
    # is gone (_still_at) and makes a fresh one, so no two jobs ever hold "the" lock at once.
    with contextlib.suppress(OSError):
        if _still_at(fd, path):
            path.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)
