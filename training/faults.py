"""Fault injection: make one rank fail at one step, to check that failures surface and heal.

Set ``[fault] fail_rank = R`` and ``fail_at_step = S`` (or ``--set fault.fail_rank=1 --set
fault.fail_at_step=0``): rank R fails just before optimizer step S (0-based, counted across
epochs, so a resumed run keeps counting). How it fails (``fault.mode``):

- ``raise``: raises :class:`InjectedFault` (a normal Python failure with a traceback);
- ``exit``: ``os._exit(1)``, a hard crash with no traceback, like a segfault;
- ``kill``: ``SIGKILL`` to the rank's own process, as the kernel's out-of-memory killer or a lost
  machine would end it;
- ``stall``: sleeps forever, as a rank stuck in a deadlocked collective or on dead storage would.

The fault fires only in the first ``fault.attempts`` attempts of a restarting launch (attempt
numbers come from the launcher, or from torchrun's restart counter), so that a restart can get
past it. Whatever the mode, the launcher must name rank R.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from contracts.heartbeat import current_attempt
from training.config import FaultConfig


class InjectedFault(RuntimeError):
    """Raised on purpose by fault injection."""


def maybe_fail(fault: FaultConfig, global_rank: int, step: int) -> None:
    """Fail here when this is the configured rank, step and attempt; otherwise do nothing (cheap)."""
    if fault.fail_rank != global_rank or fault.fail_at_step != step:
        return
    attempt = current_attempt()
    if attempt >= fault.attempts:
        return
    where = f"rank {global_rank} at step {step} (attempt {attempt + 1}, unix {time.time():.3f})"
    if fault.mode == "exit":
        print(f"fault injection: {where} exits hard", file=sys.stderr, flush=True)
        os._exit(1)
    if fault.mode == "kill":
        print(f"fault injection: {where} kills itself (SIGKILL)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.mode == "stall":
        print(f"fault injection: {where} stalls forever", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    raise InjectedFault(
        f"fault injection: rank {global_rank} fails at step {step} (fault.fail_rank/fail_at_step)"
    )
