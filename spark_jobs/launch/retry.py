"""Relaunching after a failure: at most ``max_restarts`` more attempts within one time budget (driver side)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from spark_jobs.launch.errors import (
    LaunchError,
    LaunchTimeout,
    RankFailure,
    RankStalled,
    RestartRecord,
    RestartsExhausted,
)


def restart_record(attempt: int, exc: LaunchError, resume_step: int | None) -> RestartRecord:
    """What to print and record about the failure that ended attempt ``attempt`` (1-based)."""
    rank = exc.rank if isinstance(exc, RankFailure) else -1
    if isinstance(exc, RankStalled):
        kind = "stalled"
    elif isinstance(exc, RankFailure):
        kind = "killed" if exc.abrupt else "failed"
    else:
        kind = "launch failed"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = first_line.removeprefix(f"rank {rank} failed: ").removeprefix(f"rank {rank} stalled: ")
    steps: dict[int, int] = getattr(exc, "last_steps", {})
    return RestartRecord(
        attempt=attempt,
        rank=rank,
        kind=kind,
        reason=reason,
        last_step=steps.get(rank),
        resume_step=resume_step,
        failed_unix=time.time(),
    )


def with_restarts(
    attempt_fn: Callable[[int, float], Any],
    timeout_s: float,
    max_restarts: int,
    before_restart: Callable[[], int | None],
    restarts: list[RestartRecord] | None,
) -> Any:
    """``attempt_fn(attempt, seconds_left)`` until it succeeds, at most ``1 + max_restarts`` times.

    A timeout of the whole launch is final (``timeout_s`` bounds all attempts together); any other
    :class:`LaunchError` restarts while restarts remain. ``before_restart`` prepares the next
    attempt and returns the step it resumes from.
    """
    deadline = time.monotonic() + timeout_s
    records: list[RestartRecord] = restarts if restarts is not None else []
    for attempt in range(max_restarts + 1):
        left = deadline - time.monotonic()
        try:
            return attempt_fn(attempt, left)
        except LaunchTimeout as exc:
            if attempt == 0:
                raise
            raise LaunchTimeout(
                f"launch did not finish within launch.timeout_s={timeout_s:g}s over {attempt + 1} attempts "
                f"({len(records)} restarts); its processes were stopped (raise launch.timeout_s if the job "
                "is just slow)"
            ) from exc
        except LaunchError as exc:
            if max_restarts == 0:
                raise
            resume_step = before_restart() if attempt < max_restarts else None
            record = restart_record(attempt + 1, exc, resume_step)
            records.append(record)
            if attempt == max_restarts:
                raise RestartsExhausted(records, exc) from exc
            start = f"step {resume_step}" if resume_step is not None else "the start"
            # The failure's details (traceback, or a stalled rank's stacks) first: a restart that
            # succeeds leaves no other trace of them.
            details = "\n".join(str(exc).splitlines()[1:])
            print(
                (f"{details}\n" if details else "")
                + f"restart {attempt + 1}/{max_restarts}: {record.describe()}; relaunching every rank from {start}",
                file=sys.stderr,
                flush=True,
            )
    raise AssertionError("unreachable: the last attempt returns or raises")
