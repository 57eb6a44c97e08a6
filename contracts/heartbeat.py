"""Progress heartbeats: how a torch rank tells the launcher that it is still making progress.

Every rank of a launch writes ``rank-<r>.beat`` in the launch directory (a small JSON record: its
global step, the wall-clock time, its pid), at most every :data:`BEAT_INTERVAL_S` seconds and
always when its step changes after such a pause. The launcher reads these files: a rank whose
record is older than ``launch.stall_timeout_s`` is stalled (a deadlocked collective, stuck I/O),
and its last step names where it stopped. ``rank-<r>.stack`` receives the rank's Python stacks
when the launcher sends it ``SIGUSR1`` (faulthandler).

The launcher tells a rank where the launch directory is, and which attempt of a restarting launch
this is, through two environment variables. This module imports neither pyspark nor torch: the
rank side (``training/``) and the driver side (``spark_jobs/``) both use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from contracts.atomic import write_json_atomic

LAUNCH_DIR_ENV = "SPARK_COLLAB_LAUNCH_DIR"
ATTEMPT_ENV = "SPARK_COLLAB_ATTEMPT"
# torchrun's own restart counter: fault injection under a bare `torchrun --max-restarts` uses it.
TORCHRUN_ATTEMPT_ENV = "TORCHELASTIC_RESTART_COUNT"
# Often enough that a stall timeout of a few seconds is meaningful; rare enough to cost nothing
# per step (one small file rename every half second).
BEAT_INTERVAL_S = 0.5
STARTING = -1  # the step recorded before the first optimizer step
BEAT_KIND = "beat"  # rank-<r>.beat
STACK_KIND = "stack"  # rank-<r>.stack


def rank_file(launch_dir: str | os.PathLike, rank: int, kind: str) -> Path:
    """``rank-<rank>.<kind>`` in the launch directory: the name of every per-rank file of a launch."""
    return Path(launch_dir) / f"rank-{rank}.{kind}"


def heartbeat_path(launch_dir: str | os.PathLike, rank: int) -> Path:
    return rank_file(launch_dir, rank, BEAT_KIND)


def stack_path(launch_dir: str | os.PathLike, rank: int) -> Path:
    return rank_file(launch_dir, rank, STACK_KIND)


def current_attempt() -> int:
    """Which attempt of a restarting launch this process belongs to (0: the first)."""
    for name in (ATTEMPT_ENV, TORCHRUN_ATTEMPT_ENV):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


@dataclass(frozen=True)
class Beat:
    """One heartbeat record."""

    rank: int
    step: int
    unix: float
    pid: int


def read_beat(path: str | os.PathLike) -> Beat | None:
    """The record at ``path``; None when absent or unreadable (it is replaced atomically, so
    unreadable means a foreign file, not a torn write)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return Beat(
            rank=int(doc["rank"]), step=int(doc["step"]), unix=float(doc["unix"]), pid=int(doc["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Heartbeat:
    """Rank side: ``beat(step)`` once per step. A no-op outside a launch (no launch directory)."""

    def __init__(self, launch_dir: str | os.PathLike | None, rank: int, interval_s: float = BEAT_INTERVAL_S):
        self.path = heartbeat_path(launch_dir, rank) if launch_dir else None
        self.rank = rank
        self.interval_s = interval_s
        self._last_write = 0.0
        self._last_step = STARTING

    @classmethod
    def from_environment(cls, rank: int) -> Heartbeat:
        return cls(os.environ.get(LAUNCH_DIR_ENV) or None, rank)

    def beat(self, step: int, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.time()
        # The first step after start-up is always recorded: a rank that dies right after resuming
        # is then reported at its step, not at start-up.
        first_step = self._last_step == STARTING and step != STARTING
        if not force and not first_step and now - self._last_write < self.interval_s:
            return
        self._last_write, self._last_step = now, step
        record = Beat(rank=self.rank, step=step, unix=now, pid=os.getpid())
        # A full or vanished launch directory must not fail training; the launcher notices the silence.
        with contextlib.suppress(OSError):
            write_json_atomic(self.path, asdict(record))
