"""Driver side of the progress heartbeats: which rank of a launch has stopped making progress.

Every rank writes ``rank-<r>.beat`` (:mod:`contracts.heartbeat`) at least every half second while
it takes steps. :func:`find_stalled` reads them: a rank that has beaten at least once, has not finished
or failed, and whose newest beat is older than ``launch.stall_timeout_s`` is stalled
(:func:`stalled_together` adds the ranks that went silent with it). Start-up
(interpreter, imports, rendezvous, data loading) is not judged: its length depends on the machine's
load, and ``launch.timeout_s`` bounds it. :func:`collect_stacks` then asks each such rank for its Python stacks: it sends
``SIGUSR1``, which the rank's faulthandler answers by writing every thread's stack into
``rank-<r>.stack`` (from the signal handler itself, so even a rank stuck in C code answers).

When ranks wait for each other, all of them go silent together. The one to blame is the one whose
main thread is *not* waiting inside torch (the others sit in a collective, waiting for it); among
equals (e.g. ranks on other machines, whose stacks cannot be asked for), the one that got least
far. Stdlib only: no pyspark, no torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.heartbeat import heartbeat_path, read_beat, stack_path
from spark_jobs.launch.status import PID, files_of_kind, local_pid, rank_of

STACK_SIGNAL = signal.SIGUSR1
# How long a rank gets to write its stacks once signalled.
STACK_WAIT_S = 2.0
_TORCH_FRAME = f"{os.sep}torch{os.sep}"


@dataclass(frozen=True)
class SilentRank:
    """A rank that made no progress for ``silent_s`` seconds; ``step`` is its last reported step."""

    rank: int
    step: int | None
    silent_s: float
    pid: int | None
    stack: str = ""

    @property
    def waiting_in_torch(self) -> bool:
        """Whether the innermost frame of the rank's main thread is torch code (a collective wait)."""
        top = _innermost_frame(self.stack)
        return top is not None and _TORCH_FRAME in top


def _innermost_frame(stack: str) -> str | None:
    """The first ``File ...`` line of the thread that handled the signal (the main thread)."""
    lines = stack.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), None)
    if start is None:
        return None
    for line in lines[start + 1 :]:
        if line.strip().startswith("File "):
            return line
    return None


def find_stalled(
    launch_dir: Path, stall_timeout_s: float, done: set[int], now: float | None = None
) -> list[SilentRank]:
    """Ranks silent for longer than ``stall_timeout_s`` (ranks in ``done`` are left out)."""
    now = time.time() if now is None else now
    silent: list[SilentRank] = []
    for pid_file in files_of_kind(launch_dir, PID):
        rank = rank_of(pid_file)
        if rank in done:
            continue
        beat = read_beat(heartbeat_path(launch_dir, rank))
        if beat is not None and now - beat.unix > stall_timeout_s:
            silent.append(SilentRank(rank, beat.step, now - beat.unix, local_pid(launch_dir, rank)))
    return sorted(silent, key=lambda s: s.rank)


def stalled_together(
    launch_dir: Path, stall_timeout_s: float, done: set[int], now: float | None = None
) -> list[SilentRank]:
    """Nothing while no rank has been silent for ``stall_timeout_s``; once one has, every rank silent
    for half of it: the candidates to blame.

    Ranks waiting for a stalled peer go silent at about the moment it does, but each one's newest
    beat can be older or newer than the culprit's by up to a step (beats are written on steps, at
    most every half second). So the first rank past the timeout is often a waiting one, and the
    culprit, silent just as long give or take a step, must be judged with it.
    """
    now = time.time() if now is None else now
    if not find_stalled(launch_dir, stall_timeout_s, done, now):
        return []
    return find_stalled(launch_dir, stall_timeout_s / 2, done, now)


def collect_stacks(launch_dir: Path, ranks: list[SilentRank]) -> list[SilentRank]:
    """``ranks`` with the Python stacks each one wrote when signalled (empty when it could not)."""
    asked: list[SilentRank] = []
    for r in ranks:
        path = stack_path(launch_dir, r.rank)
        if r.pid is None:
            continue
        with contextlib.suppress(OSError):
            path.write_bytes(b"")  # so that only this dump is read back
            os.kill(r.pid, STACK_SIGNAL)
            asked.append(r)
    deadline = time.monotonic() + STACK_WAIT_S
    while asked and time.monotonic() < deadline:
        if all(_read(stack_path(launch_dir, r.rank)).count("File ") > 0 for r in asked):
            break
        time.sleep(0.1)
    time.sleep(0.1)  # let a dump in progress finish
    out = []
    for r in ranks:
        stack = _read(stack_path(launch_dir, r.rank)) if r.pid is not None else ""
        out.append(SilentRank(r.rank, r.step, r.silent_s, r.pid, stack))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def culprit(ranks: list[SilentRank]) -> SilentRank:
    """The rank to blame among silent ones: not waiting inside torch, then least progress.

    Steps alone cannot decide: heartbeats are written at most every half second, so a peer's
    recorded step may lag behind the step at which the culprit stopped.
    """
    return min(ranks, key=lambda r: (r.waiting_in_torch, r.step if r.step is not None else -2, r.rank))
