"""Fault injection: make one rank fail at one step, to check that failures surface.

Set ``[fault] fail_rank = R`` and ``fail_at_step = S`` (or ``--set fault.fail_rank=1 --set
fault.fail_at_step=0``): rank R fails just before optimizer step S (0-based, counted across
epochs, so a resumed run keeps counting). ``fault.mode = "raise"`` raises :class:`InjectedFault`
(a normal Python failure with a traceback); ``"exit"`` calls ``os._exit(1)``, a hard crash with no
traceback, like a segfault or an out-of-memory kill. Either way the launcher must report rank R.
"""

from __future__ import annotations

import os
import sys

from training.config import FaultConfig


class InjectedFault(RuntimeError):
    """Raised on purpose by fault injection."""


def maybe_fail(fault: FaultConfig, global_rank: int, step: int) -> None:
    """Fail here when this is the configured rank and step; otherwise do nothing (cheap)."""
    if fault.fail_rank != global_rank or fault.fail_at_step != step:
        return
    if fault.mode == "exit":
        print(f"fault injection: rank {global_rank} exits hard at step {step}", file=sys.stderr, flush=True)
        os._exit(1)
    raise InjectedFault(
        f"fault injection: rank {global_rank} fails at step {step} (fault.fail_rank/fail_at_step)"
    )
