"""The status-file protocol between the torch ranks of a launch and the driver that watches them.

Every rank writes into the *launch directory* (names from :func:`contracts.heartbeat.rank_file`):

- ``rank-<r>.pid``: ``"<pid> <host>"`` once the rank has started (the driver's kill path reads it);
- ``rank-<r>.ok``: the pickled return value once its work is done;
- ``rank-<r>.error``: a pickled :class:`RankError` record (as a dict) when it failed or was stopped;
- ``rank-<r>.beat`` / ``rank-<r>.stack``: progress heartbeat and Python stacks (:mod:`contracts.heartbeat`).

Plus ``payload.pickle``, the ``(fn, config)`` of a function launch. Every file is replaced
atomically, so a reader never sees half of one. Runs on both sides: stdlib and ``contracts`` only,
no pyspark (the rank side imports it).
"""

from __future__ import annotations

import pickle
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contracts.atomic import write_bytes_atomic
from contracts.heartbeat import rank_file

PID = "pid"
OK = "ok"
ERROR = "error"
PAYLOAD_NAME = "payload.pickle"
# The kind recorded for a rank stopped by a signal (no exception to name).
SIGNAL_KIND = "Signal"


@dataclass(frozen=True)
class RankError:
    """What a rank records when it fails: when, which rank, what type, the formatted traceback."""

    time: float
    rank: int
    type: str
    traceback: str
    host: str


def status_path(launch_dir: Path, rank: int, kind: str) -> Path:
    return rank_file(launch_dir, rank, kind)


def rank_of(path: Path) -> int:
    """The rank a ``rank-<r>.<kind>`` file belongs to."""
    return int(path.name.split(".")[0].split("-")[1])


def files_of_kind(launch_dir: Path, kind: str) -> Iterator[Path]:
    return launch_dir.glob(f"rank-*.{kind}")


def ranks_with(launch_dir: Path, kind: str) -> set[int]:
    """The ranks that have written a file of ``kind``."""
    return {rank_of(p) for p in files_of_kind(launch_dir, kind)}


def write_pid(launch_dir: Path, rank: int, pid: int) -> None:
    write_bytes_atomic(status_path(launch_dir, rank, PID), f"{pid} {socket.gethostname()}".encode())


def read_pid(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` from a pid file; None when absent or malformed."""
    try:
        pid_s, host = path.read_text().split()
        return int(pid_s), host
    except (OSError, ValueError):
        return None


def local_pid(launch_dir: Path, rank: int) -> int | None:
    """The rank's pid when it runs on this machine, else None."""
    found = read_pid(status_path(launch_dir, rank, PID))
    return found[0] if found is not None and found[1] == socket.gethostname() else None


def write_ok(launch_dir: Path, rank: int, result: Any) -> None:
    write_bytes_atomic(status_path(launch_dir, rank, OK), pickle.dumps(result))


def read_ok(launch_dir: Path, rank: int) -> tuple[bool, Any]:
    """``(True, result)`` when the rank recorded its result, else ``(False, None)``."""
    path = status_path(launch_dir, rank, OK)
    if not path.exists():
        return False, None
    return True, pickle.loads(path.read_bytes())


def write_error(launch_dir: Path, rank: int, exc: BaseException | None, note: str = "") -> None:
    """Record this rank's failure: ``exc`` with its traceback, or (``exc`` None) a signal ``note``."""
    if exc is not None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = type(exc).__name__
    else:
        text, kind = note, SIGNAL_KIND
    record = RankError(time=time.time(), rank=rank, type=kind, traceback=text, host=socket.gethostname())
    # A plain dict on disk: readable without this module's class.
    write_bytes_atomic(status_path(launch_dir, rank, ERROR), pickle.dumps(asdict(record)))


def read_errors(launch_dir: Path) -> list[RankError]:
    """Every rank's error record, earliest first (unreadable ones are left out)."""
    errors = []
    for path in files_of_kind(launch_dir, ERROR):
        try:
            doc = pickle.loads(path.read_bytes())
            errors.append(RankError(**doc))
        except (OSError, pickle.UnpicklingError, EOFError, TypeError):
            continue
    return sorted(errors, key=lambda e: e.time)


def any_error(launch_dir: Path) -> bool:
    return any(files_of_kind(launch_dir, ERROR))


def write_payload(launch_dir: Path, payload: bytes) -> None:
    write_bytes_atomic(launch_dir / PAYLOAD_NAME, payload)


def read_payload(launch_dir: Path) -> Any:
    """The ``(fn, config)`` of a function launch. Plain ``pickle``: see :mod:`spark_jobs.launch.rank`."""
    return pickle.loads((launch_dir / PAYLOAD_NAME).read_bytes())
