"""Range checks of the sections every config root shares: ``[launch]``, ``[run]`` and ``[fault]``.

The dataclasses of these sections live in :mod:`training.config_sections` and are the same for the
classifier root and for a root of its own such as :class:`training.lm_config.GPTConfig`; their
checks live here so that a root reuses them instead of carrying a copy. Only the wording that
depends on the job (what a "step" is, when checkpoints are written) is a parameter. No torch
import: the driver runs these checks before it starts Spark.
"""

from __future__ import annotations

import importlib.util

from training.config_sections import AUTO, FAULT_MODES, TRACKERS, FaultConfig, LaunchConfig, RunConfig


def _bad(key: str, msg: str) -> None:
    raise ValueError(f"{key}: {msg}")


def check_launch(launch: LaunchConfig, *, collaborative: bool) -> None:
    """``[launch]``: the number of ranks (a count, or ``"auto"`` outside collaborative runs) and the timeouts.

    With ``"auto"`` the checks that need the number are left to the caller, once the driver has
    resolved it from what Spark offers.
    """
    n = launch.num_processes
    if isinstance(n, str):
        if n != AUTO:
            _bad("launch.num_processes", f'expected a number >= 1 or "{AUTO}", got {n!r}')
        if collaborative:
            _bad("launch.num_processes", f'"{AUTO}" is for `spark-collab train`; set the number of peers')
    elif n < 1:
        _bad("launch.num_processes", "must be >= 1")
    if launch.timeout_s < 1:
        _bad("launch.timeout_s", "must be >= 1 second")
    if launch.collective_timeout_s < 1:
        _bad("launch.collective_timeout_s", "must be >= 1 second")
    if launch.max_restarts < 0:
        _bad("launch.max_restarts", "must be >= 0")
    if launch.stall_timeout_s < 0:
        _bad("launch.stall_timeout_s", "must be >= 0 seconds (0: no stall detection)")


def check_run(run: RunConfig, *, step_unit: str, checkpoints_at: str, dir_example: str) -> None:
    """``[run]``: checkpoint cadence and retention, the run directory, the tracker (and its package).

    ``step_unit`` names what ``checkpoint_every`` counts ("steps", "iterations"), ``checkpoints_at``
    when checkpoints are written anyway ("epoch ends", "evaluations"), ``dir_example`` a run
    directory to suggest.
    """
    if run.checkpoint_every < 0:
        _bad("run.checkpoint_every", f"must be >= 0 {step_unit} (0: at {checkpoints_at} only)")
    if run.keep_checkpoints < 1:
        _bad("run.keep_checkpoints", "must be >= 1")
    if not run.dir:
        _bad("run.dir", f"set a run directory, e.g. {dir_example}")
    if run.tracking not in TRACKERS:
        _bad("run.tracking", f"unknown tracker {run.tracking!r}; choose one of: {', '.join(TRACKERS)}")
    if run.tracking == "mlflow" and importlib.util.find_spec("mlflow") is None:
        _bad(
            "run.tracking",
            "mlflow is not installed: pip install 'spark-collab[tracking]' (or run.tracking=none)",
        )


def check_fault(fault: FaultConfig, num_processes: int | str) -> None:
    """``[fault]``: the mode, the attempts, and a failing rank that exists (when the count is known)."""
    if fault.attempts < 0:
        _bad("fault.attempts", "must be >= 0")
    if fault.mode not in FAULT_MODES:
        _bad("fault.mode", f"choose one of: {', '.join(FAULT_MODES)}")
    if isinstance(num_processes, int) and fault.fail_rank >= num_processes:
        _bad("fault.fail_rank", f"rank {fault.fail_rank} does not exist with {num_processes} processes")
