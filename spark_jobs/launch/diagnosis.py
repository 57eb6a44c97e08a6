"""Which rank to blame for a failed launch, from the per-rank status files (driver side, stdlib only)."""

from __future__ import annotations

from pathlib import Path

from spark_jobs.launch import status
from spark_jobs.launch.errors import RankFailure
from spark_jobs.launch.status import RankError

TAIL_LINES = 25
# Exception types that mean "my peer went away", i.e. a consequence of another rank's failure.
_COMM_ERRORS = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")
_COMM_PATTERNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL error")


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _is_consequence(err: RankError) -> bool:
    """True for errors that only say a peer disappeared or that we were told to stop."""
    if err.type == status.SIGNAL_KIND or err.type in _COMM_ERRORS:
        return True
    return any(p in err.traceback for p in _COMM_PATTERNS)


def diagnose(launch_dir: Path, num_processes: int) -> RankFailure | None:
    """The failure to report, from the per-rank status files; None when no rank failed.

    Priority: the earliest real exception; else a rank that vanished without any status (os._exit,
    OOM kill, segfault) while others only saw their peer disappear; else the earliest error at all.
    """
    succeeded = status.ranks_with(launch_dir, status.OK)
    if len(succeeded) == num_processes:
        return None  # every rank recorded its result: what happened to a process afterwards is moot
    errors = status.read_errors(launch_dir)
    started = status.ranks_with(launch_dir, status.PID)
    finished = succeeded | {e.rank for e in errors}
    silent = sorted(started - finished)
    primary = [e for e in errors if not _is_consequence(e)]
    others = ", ".join(f"rank {e.rank}: {e.type}" for e in errors)
    if primary:
        e = primary[0]
        last = e.traceback.rstrip().splitlines()[-1] if e.traceback.strip() else e.type
        return RankFailure(e.rank, tail(e.traceback), f"{last} (all ranks: {others})")
    if silent and (errors or len(started) == num_processes):
        r = silent[0]
        note = f"also: {others}" if others else "no other rank reported"
        msg = f"rank {r} died without a Python traceback (os._exit, signal or out-of-memory kill); {note}"
        text = "(no traceback: the process exited abruptly; see the rank's output above)"
        return RankFailure(r, text, msg, abrupt=True)
    if errors:
        e = errors[0]
        return RankFailure(e.rank, tail(e.traceback), f"{e.type} (all ranks: {others})")
    return None
