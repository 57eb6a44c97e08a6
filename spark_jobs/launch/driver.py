"""Driver side of a launch: start TorchDistributor bounded in time, watch the ranks, stop them all.

``launch(fn, config, ...)`` runs ``fn(config)`` on every torch rank and returns rank 0's result;
``launch_script(path, args, ...)`` does the same for a Python script (returns None). The driver
waits at most ``timeout_s`` and, once any rank has failed, at most ``failure_grace_s`` more for the
others to stop; then it kills the launch's processes (tagged through an environment variable and
the ranks' pid files) and cancels the Spark job. With ``stall_timeout_s``, a rank whose progress
heartbeat goes quiet that long is named with its last step and its Python stacks
(:mod:`spark_jobs.launch.health`). Ctrl-C or SIGTERM on the driver kills every process of the
launch before the interruption goes on. pyspark is imported only inside functions: the package is
also imported on every rank (:mod:`spark_jobs.launch.rank`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.heartbeat import BEAT_KIND, read_beat
from spark_jobs.launch import status
from spark_jobs.launch.diagnosis import diagnose, tail
from spark_jobs.launch.errors import LaunchError, LaunchTimeout, RankStalled, RestartRecord
from spark_jobs.launch.health import collect_stacks, culprit, stalled_together
from spark_jobs.launch.reference import split_reference
from spark_jobs.launch.retry import with_restarts
from spark_jobs.launch.torchrun import (
    TorchrunStarter,
    environ_set,
    guard_chain_enabled,
    make_distributor,
    start,
)

LAUNCH_ID_ENV = "SPARK_COLLAB_LAUNCH_ID"


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    done: bool = False


def _kill_launch(launch_dir: Path, launch_id: str) -> None:
    """SIGKILL every process of this launch on this machine: tagged ones and the ranks' pid files."""
    me = os.getpid()
    victims: set[int] = set()
    host = socket.gethostname()
    for path in status.files_of_kind(launch_dir, status.PID):
        found = status.read_pid(path)
        if found is not None and found[1] == host:
            victims.add(found[0])
    tag = f"{LAUNCH_ID_ENV}={launch_id}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if tag in (entry / "environ").read_bytes().split(b"\0"):
                victims.add(int(entry.name))
        except OSError:
            continue
    for pid in victims - {me}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _stalled(launch_dir: Path, stall_timeout_s: float) -> RankStalled | None:
    """A :class:`RankStalled` naming the rank to blame, with stacks, when ranks went silent."""
    done = status.ranks_with(launch_dir, status.OK) | status.ranks_with(launch_dir, status.ERROR)
    silent = stalled_together(launch_dir, stall_timeout_s, done)
    if not silent:
        return None
    silent = collect_stacks(launch_dir, silent)
    blamed = culprit(silent)
    return RankStalled(blamed, [r for r in silent if r is not blamed], stall_timeout_s)


def _last_steps(launch_dir: Path) -> dict[int, int]:
    """Each rank's last heartbeat step in ``launch_dir``."""
    steps = {}
    for path in status.files_of_kind(launch_dir, BEAT_KIND):
        beat = read_beat(path)
        if beat is not None:
            steps[beat.rank] = beat.step
    return steps


def _run_bounded(
    run: Callable[[], Any],
    launch_dir: Path,
    num_processes: int,
    timeout_s: float,
    failure_grace_s: float,
    local_mode: bool,
    stall_timeout_s: float = 0,
) -> Any:
    """Run ``run()`` (a TorchDistributor call) in a thread; return rank 0's result or raise.

    Whatever ends the wait (a result, a failure, a timeout, a stall, or an interruption of the
    driver such as Ctrl-C), no process of the launch outlives this function.
    """
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    launch_id = uuid.uuid4().hex
    group = f"spark-collab-launch-{launch_id[:12]}"
    outcome = _Outcome()

    def target() -> None:
        try:
            if sc is not None:
                sc.setJobGroup(group, "spark-collab torch launch", interruptOnCancel=True)
            outcome.result = run()
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done = True

    def stop_launch() -> None:
        _kill_launch(launch_dir, launch_id)
        if sc is not None and not local_mode:  # local mode runs no Spark job to cancel
            with contextlib.suppress(Exception):
                sc.cancelJobGroup(group)

    thread = threading.Thread(target=target, name=group, daemon=True)
    begun = time.monotonic()
    timed_out = False
    stalled: RankStalled | None = None
    first_failure: float | None = None
    # Local-mode torchrun inherits os.environ: the tag lets the kill path find every process of
    # this launch (guard/torchrun agent, ranks) and nothing else.
    with environ_set(LAUNCH_ID_ENV, launch_id):
        thread.start()
        try:
            while not outcome.done:
                thread.join(0.2)
                now = time.monotonic()
                if first_failure is None and status.any_error(launch_dir):
                    first_failure = now
                if stall_timeout_s and first_failure is None:
                    stalled = _stalled(launch_dir, stall_timeout_s)
                if (
                    now - begun > timeout_s
                    or stalled is not None
                    or (first_failure is not None and now - first_failure > failure_grace_s)
                ):
                    timed_out = now - begun > timeout_s
                    stop_launch()
                    thread.join(30)
                    break
        except BaseException:
            # Ctrl-C / SIGTERM on the driver (or any other escape): take the ranks down with us.
            stop_launch()
            raise

    if stalled is not None:
        raise stalled
    failure = diagnose(launch_dir, num_processes)
    # After a timeout our own SIGKILLs make every rank look "silent": only a real exception counts.
    if failure is not None and not (timed_out and failure.abrupt):
        raise failure
    if timed_out:
        raise LaunchTimeout(
            f"launch did not finish within launch.timeout_s={timeout_s:g}s; its processes were stopped "
            "(raise launch.timeout_s if the job is just slow)"
        )
    all_ok = len(status.ranks_with(launch_dir, status.OK)) == num_processes
    if outcome.error is not None and not all_ok:
        raise LaunchError(f"TorchDistributor failed: {tail(str(outcome.error), 15)}") from outcome.error
    if outcome.error is not None:
        print(
            "warning: every rank recorded its result, then a rank process exited abnormally "
            f"(TorchDistributor: {tail(str(outcome.error), 1)}); keeping the results",
            file=sys.stderr,
        )
    found, result = status.read_ok(launch_dir, 0)
    if found:
        return result
    if not outcome.done:
        raise LaunchError("launch was stopped but TorchDistributor did not return")
    # No shared filesystem between driver and rank 0: TorchDistributor's own return is rank 0's
    # in distributed mode (it collects partition 0), which is the only mode where this happens.
    return outcome.result


def _bounded_launch(
    rank_args: tuple[str, ...],
    payload: bytes | None,
    launch_dir: str | Path | None,
    num_processes: int,
    local_mode: bool,
    use_gpu: bool,
    timeout_s: float,
    failure_grace_s: float,
    stall_timeout_s: float = 0,
    attempt: int = 0,
) -> Any:
    """Make the launch directory, run TorchDistributor with a :class:`TorchrunStarter` for
    ``rank_args`` (and ``payload``) bounded, clean up a temporary directory.

    A :class:`LaunchError` raised here carries ``last_steps`` (rank -> last heartbeat step), read
    before a temporary launch directory goes away.
    """
    temporary = launch_dir is None
    if temporary:
        path = Path(tempfile.mkdtemp(prefix="spark-collab-launch-"))
    else:
        path = Path(launch_dir).expanduser().absolute()
        if path.exists():
            shutil.rmtree(path)  # status files of an earlier launch would be misread as this one's
        path.mkdir(parents=True)
    try:
        distributor = make_distributor(num_processes, local_mode, use_gpu)
        starter = TorchrunStarter(str(path), rank_args, payload, attempt, guard=guard_chain_enabled())
        return _run_bounded(
            lambda: start(distributor, starter),
            path,
            num_processes,
            timeout_s,
            failure_grace_s,
            local_mode,
            stall_timeout_s,
        )
    except LaunchError as exc:
        exc.last_steps = _last_steps(path)  # type: ignore[attr-defined]
        raise
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def launch(
    fn: Callable[[Any], Any] | str,
    config: Any,
    num_processes: int = 2,
    local_mode: bool = True,
    use_gpu: bool = False,
    timeout_s: float = 600,
    *,
    launch_dir: str | Path | None = None,
    failure_grace_s: float = 20.0,
    stall_timeout_s: float = 0,
    max_restarts: int = 0,
    prepare_restart: Callable[[Any], tuple[Any, int | None]] | None = None,
    restarts: list[RestartRecord] | None = None,
) -> Any:
    """Run ``fn(config)`` on ``num_processes`` torch ranks through TorchDistributor.

    ``fn`` takes one picklable argument and returns a small picklable result. Either a function
    (module-level ones are pickled by reference, others by value with cloudpickle) or a
    ``"package.module:function"`` string, which only the ranks import: the driver then never
    imports the training code (and torch), which keeps a cold command's start-up short. An active
    SparkSession is required.

    Returns rank 0's result. Raises :class:`RankFailure` (with ``.rank``) when any rank fails,
    :class:`RankStalled` when one makes no progress for ``stall_timeout_s`` (0: not watched),
    :class:`LaunchTimeout` after ``timeout_s`` (all attempts together), :class:`LaunchError` for
    other launch trouble. ``launch_dir`` (default: a fresh temporary directory, removed afterwards)
    receives the per-rank status files; an existing one is emptied first.

    ``max_restarts``: after a failure other than the timeout, relaunch every rank, at most this
    often; ``prepare_restart(config)`` returns the next attempt's config and the step it resumes
    from (e.g. the config with resume switched on and the last checkpoint's step). Each restart is
    printed and appended to ``restarts``; when none remain, :class:`RestartsExhausted` names them all.
    """
    if num_processes < 1:
        raise ValueError("num_processes must be >= 1")
    from pyspark import cloudpickle

    if isinstance(fn, str):
        split_reference(fn)  # a malformed reference fails here, not on every rank
    current = [config]

    def attempt(number: int, seconds_left: float) -> Any:
        # cloudpickle, so that functions defined in __main__ or notebooks work too; a module-level
        # function still pickles by reference, which plain pickle loads without pyspark.
        payload = cloudpickle.dumps((fn, current[0]))
        return _bounded_launch(
            ("--call",),
            payload,
            launch_dir,
            num_processes,
            local_mode,
            use_gpu,
            seconds_left,
            failure_grace_s,
            stall_timeout_s,
            number,
        )

    def before_restart() -> int | None:
        if prepare_restart is None:
            return None
        current[0], resume_step = prepare_restart(current[0])
        return resume_step

    return with_restarts(attempt, timeout_s, max_restarts, before_restart, restarts)


def launch_script(
    script: str | Path,
    args: Sequence[str] = (),
    num_processes: int = 2,
    local_mode: bool = True,
    use_gpu: bool = False,
    timeout_s: float = 600,
    *,
    launch_dir: str | Path | None = None,
    failure_grace_s: float = 20.0,
    stall_timeout_s: float = 0,
    max_restarts: int = 0,
    restarts: list[RestartRecord] | None = None,
) -> None:
    """Run a Python script on every rank (as ``torchrun SCRIPT ARGS`` would); raise like :func:`launch`.

    A restarted script gets the same arguments; it finds its attempt number in the environment
    variable ``SPARK_COLLAB_ATTEMPT`` (0 first) and should resume from its own checkpoints.
    """
    script_path = Path(script).expanduser().absolute()
    if not script_path.is_file():
        raise ValueError(f"{script_path}: script not found")

    def attempt(number: int, seconds_left: float) -> None:
        _bounded_launch(
            (str(script_path), *map(str, args)),
            None,
            launch_dir,
            num_processes,
            local_mode,
            use_gpu,
            seconds_left,
            failure_grace_s,
            stall_timeout_s,
            number,
        )

    with_restarts(attempt, timeout_s, max_restarts, lambda: None, restarts)
