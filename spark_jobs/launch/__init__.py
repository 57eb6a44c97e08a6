"""TorchDistributor, with the traps we measured fixed: the public API of a launch.

``launch(fn, config, ...)`` runs ``fn(config)`` on every torch rank and returns rank 0's result.
``launch_script(path, args, ...)`` does the same for a Python script (returns None).

What plain ``TorchDistributor.run`` gets wrong (pyspark 4.3) and how this package fixes it:

- Local mode returns the result of whichever rank wrote ``output.pickle`` last. Here every rank
  runs :mod:`.rank`, which writes its own status file into a *launch directory* (:mod:`.status`);
  the driver reads rank 0's file.
- A failure on a non-zero rank can be swallowed, ``run("script.py")`` returns None even when a
  rank fails (its torchrun wrapper exits 0), and distributed mode only says "TorchDistributor
  failed during training". Here each rank writes its traceback (or, if it is stopped by a signal,
  that fact) to ``rank-<r>.error``; the driver raises :class:`RankFailure` naming the rank that
  failed first (:mod:`.diagnosis`), with the end of its traceback, whatever TorchDistributor
  itself reported.
- Nothing bounds a hang. Here the driver (:mod:`.driver`) waits at most ``timeout_s`` and, once any
  rank has failed, at most ``failure_grace_s`` more; then it kills the launch's processes and
  cancels the Spark job. With ``stall_timeout_s``, a rank whose progress heartbeat
  (:mod:`contracts.heartbeat`) goes quiet that long is named with its last step and its Python
  stacks (:mod:`.health`), and the launch is stopped as :class:`RankStalled`.
- Nothing restarts. Here ``max_restarts=N`` relaunches every rank after a failure (:mod:`.retry`),
  at most N times; ``prepare_restart`` turns the config into the next attempt's, and each restart
  is printed and recorded as a :class:`RestartRecord`.
- Ctrl-C or SIGTERM on the driver: the ranks run in a session of their own (so a terminal's
  Ctrl-C reaches only the driver), and the driver kills every process of the launch before the
  interruption goes on to the command, which exits 130 or 143.

The launch directory must be visible to the driver and every rank: always true in local mode and
on a one-machine cluster; on a real cluster put it on a shared filesystem (``launch_dir=``).

Process chain (:mod:`.torchrun`): TorchDistributor (local mode on the driver, or one barrier task
per node) -> a parent-death guard that execs torchrun -> ``python -m spark_jobs.launch.rank`` on
every rank. Nothing on that path imports pyspark, and neither does importing this package (the
ranks import it too): pyspark is imported inside driver-side functions only.
"""

from __future__ import annotations

from spark_jobs.launch.diagnosis import diagnose
from spark_jobs.launch.driver import launch, launch_script
from spark_jobs.launch.errors import (
    LaunchError,
    LaunchTimeout,
    RankFailure,
    RankStalled,
    RestartRecord,
    RestartsExhausted,
)
from spark_jobs.launch.reference import resolve_function

__all__ = [
    "LaunchError",
    "LaunchTimeout",
    "RankFailure",
    "RankStalled",
    "RestartRecord",
    "RestartsExhausted",
    "diagnose",
    "launch",
    "launch_script",
    "resolve_function",
]
