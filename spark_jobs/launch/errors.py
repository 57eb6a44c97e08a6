"""What a launch raises, and the record of one restart. Stdlib only (imported on both sides)."""

from __future__ import annotations

from dataclasses import dataclass

from spark_jobs.launch.health import SilentRank


class LaunchError(RuntimeError):
    """The launch failed without a rank-level explanation (Spark or torchrun trouble)."""


class LaunchTimeout(LaunchError):
    """The launch ran past ``timeout_s``; its processes were stopped."""


class RankFailure(LaunchError):
    """A rank failed. ``rank`` is its global rank, ``tail`` the end of its traceback."""

    def __init__(self, rank: int, tail: str, summary: str, abrupt: bool = False) -> None:
        self.rank = rank
        self.tail = tail
        self.abrupt = abrupt  # the rank left no traceback (os._exit, signal, OOM kill)
        super().__init__(f"rank {rank} failed: {summary}\n--- rank {rank} traceback (last lines) ---\n{tail}")


class RankStalled(RankFailure):
    """A rank made no progress for ``stall_timeout_s``; ``tail`` holds its Python stacks."""

    def __init__(self, stalled: SilentRank, others: list[SilentRank], stall_timeout_s: float) -> None:
        self.step = stalled.step
        at = f"step {stalled.step}" if stalled.step is not None and stalled.step >= 0 else "start-up"
        waiting = ", ".join(f"rank {o.rank} (step {o.step})" for o in others)
        summary = (
            f"made no progress for {stalled.silent_s:.0f}s (launch.stall_timeout_s={stall_timeout_s:g}), "
            f"last at {at}; the launch was stopped"
            + (f"; also silent, waiting on it: {waiting}" if waiting else "")
        )
        stack = (
            stalled.stack.strip() or "(no stack: the rank runs on another machine or did not answer SIGUSR1)"
        )
        RuntimeError.__init__(
            self,
            f"rank {stalled.rank} stalled: {summary}\n--- rank {stalled.rank} Python stacks ---\n{stack}",
        )
        self.rank, self.tail, self.abrupt = stalled.rank, stack, False


@dataclass(frozen=True)
class RestartRecord:
    """One restart: attempt ``attempt`` (1-based) failed because of ``rank`` (-1: unknown)."""

    attempt: int
    rank: int
    kind: str  # "exception", "killed" (no traceback), "stalled", "launch" (Spark/torchrun trouble)
    reason: str  # the failure's first line
    last_step: int | None  # the failing rank's last heartbeat step
    resume_step: int | None  # the step the next attempt resumes from (None: from the start)
    failed_unix: float

    def describe(self) -> str:
        who = f"rank {self.rank}" if self.rank >= 0 else "the launch"
        at = f" at step {self.last_step}" if self.last_step is not None and self.last_step >= 0 else ""
        return f"attempt {self.attempt}: {who} {self.kind}{at} ({self.reason})"


class RestartsExhausted(LaunchError):
    """Every attempt failed; ``failures`` lists them all, ``last`` is the final attempt's error."""

    def __init__(self, failures: list[RestartRecord], last: LaunchError) -> None:
        self.failures = failures
        self.last = last
        listed = "; ".join(f.describe() for f in failures)
        super().__init__(
            f"{len(failures)} attempts failed (launch.max_restarts={len(failures) - 1}): {listed}\n{last}"
        )
