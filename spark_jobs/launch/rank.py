"""What runs inside every torch rank of a launch: ``python -m spark_jobs.launch.rank``.

``--launch-dir DIR --call`` unpickles ``(fn, config)`` from the launch directory and runs
``fn(config)``; ``--launch-dir DIR SCRIPT [ARGS...]`` runs SCRIPT as ``__main__``. Either way the
rank announces itself, records its result or its failure (:mod:`spark_jobs.launch.status`), and
answers the driver's requests for its stacks. Runs in the torch rank processes, never in Spark:
nothing here imports pyspark, so a rank costs little more than one started by a bare torchrun.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import runpy
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from contracts.heartbeat import LAUNCH_DIR_ENV, stack_path
from spark_jobs.launch import status
from spark_jobs.launch.reference import resolve_function

_USAGE = "usage: python -m spark_jobs.launch.rank --launch-dir DIR (--call | SCRIPT [ARGS...])"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _start_rank(launch_dir: Path) -> int:
    """Announce this rank (pid file for the driver's kill path) and trap SIGTERM.

    torchrun stops surviving ranks with SIGTERM when one fails; recording that lets the driver
    tell the rank that failed from the ranks that were stopped because of it.
    """
    rank = _rank()
    launch_dir.mkdir(parents=True, exist_ok=True)
    os.environ[LAUNCH_DIR_ENV] = str(launch_dir)  # where training writes its progress heartbeat
    _dump_stacks_on_request(launch_dir, rank)
    status.write_pid(launch_dir, rank, os.getpid())

    def on_term(signum: int, _frame: Any) -> None:
        status.write_error(
            launch_dir,
            rank,
            None,
            f"stopped by signal {signum} (another rank failed or the launch timed out)",
        )
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        # SIGINT too: a rank stopped by Ctrl-C records one line instead of printing a traceback.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_term)
    return rank


_stack_file: BinaryIO | None = None  # kept open for faulthandler, which writes to its descriptor


def _dump_stacks_on_request(launch_dir: Path, rank: int) -> None:
    """On SIGUSR1 (sent by the driver to a stalled rank), write every thread's stack to a file."""
    global _stack_file
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        _stack_file = stack_path(launch_dir, rank).open("wb")
        faulthandler.register(signal.SIGUSR1, file=_stack_file, all_threads=True)


def _exit_without_native_teardown() -> None:
    """Registered once a rank's work is recorded: flush and leave before native destructors run.

    Seen here (torch 2.13 CPU, gloo): about one launch in ten, a rank that had finished and written
    its result aborted in interpreter teardown ("terminate called without an active exception",
    SIGABRT), and torchrun then reported the whole launch as failed. The cause was a process group
    that outlived ``destroy_process_group()`` (held by DDP in a reference cycle) and was torn down
    during finalization; ``training.dist.distributed()`` now collects it first. This hook stays as
    the second line of defence for user functions that leak a group: running last registered,
    first at exit, it skips only native teardown.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # An exception that escaped after our bookkeeping (e.g. while TorchDistributor pickled the
    # output) was printed and left in sys.last_value: keep the failing exit status then.
    os._exit(1 if getattr(sys, "last_value", None) is not None else 0)


def _exit_early_when_done() -> None:
    """Arm :func:`_exit_without_native_teardown`, in torchrun worker processes only.

    Exit hooks run after the rank's result file is written. Never in other processes (a test
    calling ``rank_entry`` in pytest must keep pytest's own exit status).
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:
        atexit.register(_exit_without_native_teardown)


def rank_entry(payload: tuple[Callable[[Any], Any] | str, Any, str]) -> Any:
    """What every rank runs for a function launch: ``fn(config)`` plus status bookkeeping."""
    fn, config, launch_dir_s = payload
    launch_dir = Path(launch_dir_s)
    rank = _start_rank(launch_dir)
    try:
        result = resolve_function(fn)(config)
    except BaseException as exc:
        status.write_error(launch_dir, rank, exc)
        raise
    status.write_ok(launch_dir, rank, result)
    _exit_early_when_done()
    return result


def _call_payload(launch_dir: Path) -> int:
    """``--call``: unpickle ``(fn, config)`` from the launch directory and run it via :func:`rank_entry`.

    Plain ``pickle`` suffices: a module-level ``fn`` was pickled by reference, so only its own module
    is imported here (a by-value function pulls in ``pyspark.cloudpickle`` on its own).
    """
    fn, config = status.read_payload(launch_dir)
    rank_entry((fn, config, str(launch_dir)))
    return 0


def _run_script(launch_dir: Path, script: str, args: list[str]) -> int:
    """``SCRIPT [ARGS...]``: run SCRIPT as ``__main__`` with the same bookkeeping."""
    rank = _start_rank(launch_dir)
    sys.argv = [script, *args]
    # As `python SCRIPT` would: the script's own directory first on sys.path.
    sys.path[0] = str(Path(script).resolve().parent)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status.write_error(launch_dir, rank, exc)
            raise
    except BaseException as exc:
        status.write_error(launch_dir, rank, exc)
        raise
    status.write_ok(launch_dir, rank, None)
    _exit_early_when_done()
    return 0


def main(argv: Sequence[str]) -> int:
    """``--launch-dir DIR (--call | SCRIPT [ARGS...])``; exit status 2 for anything else."""
    if len(argv) < 3 or argv[0] != "--launch-dir":
        print(_USAGE, file=sys.stderr)
        return 2
    launch_dir = Path(argv[1])
    try:
        if argv[2] == "--call":
            return _call_payload(launch_dir)
        return _run_script(launch_dir, argv[2], list(argv[3:]))
    except Exception:
        # Already recorded in rank-<r>.error, whose traceback the driver reports once, for the rank
        # that failed first; printing it here too would repeat it on the console for every rank.
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
