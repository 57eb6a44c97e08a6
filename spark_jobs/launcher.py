"""TorchDistributor, with the traps we measured fixed.

``launch(fn, config, ...)`` runs ``fn(config)`` on every torch rank and returns rank 0's result.
``launch_script(path, args, ...)`` does the same for a Python script (returns None).

What plain ``TorchDistributor.run`` gets wrong (pyspark 4.3) and how this module fixes it:

- Local mode returns the result of whichever rank wrote ``output.pickle`` last. Here every rank
  runs inside :func:`_rank_entry`, which writes its own status file into a *launch directory*;
  the driver reads rank 0's file.
- A failure on a non-zero rank can be swallowed, ``run("script.py")`` returns None even when a
  rank fails (its torchrun wrapper exits 0), and distributed mode only says "TorchDistributor
  failed during training". Here each rank writes its traceback (or, if it is stopped by a signal,
  that fact) to ``rank-<r>.error``; the driver raises :class:`RankFailure` naming the rank that
  failed first, with the end of its traceback, whatever TorchDistributor itself reported.
- Nothing bounds a hang. Here the driver waits at most ``timeout_s`` and, once any rank has
  failed, at most ``failure_grace_s`` more for the others to stop; then it kills the launch's
  processes (tagged through an environment variable / pid files) and cancels the Spark job.
  With ``stall_timeout_s``, a rank whose progress heartbeat (:mod:`contracts.heartbeat`) goes
  quiet that long is named with its last step and its Python stacks (:mod:`launch_health`), and
  the launch is stopped as :class:`RankStalled`.
- Nothing restarts. Here ``max_restarts=N`` relaunches every rank after a failure (an exception,
  a killed process, a stall, a lost Spark task), at most N times; ``prepare_restart`` turns the
  config into the next attempt's (e.g. resume from the last checkpoint), and each restart is
  printed and recorded as a :class:`RestartRecord`.
- Ctrl-C or SIGTERM on the driver: the ranks run in a session of their own (so a terminal's
  Ctrl-C reaches only the driver, not every rank with a traceback each), and the driver kills every
  process of the launch before the interruption goes on to the command, which exits 130 or 143.

The launch directory must be visible to the driver and every rank: always true in local mode and
on a one-machine cluster; on a real cluster put it on a shared filesystem (``launch_dir=``).
Without that, results still come back (TorchDistributor returns partition 0's output in
distributed mode) but failures are reported without the rank's traceback.

Process chain (see :class:`_TorchrunStarter`): TorchDistributor (local mode on the driver, or one
barrier task per node) -> a parent-death guard that execs torchrun -> ``python -m
spark_jobs.launcher`` on every rank, which runs the unpickled function or the script. Nothing on
that path imports pyspark, so a launch costs little more than a bare torchrun. This module imports
pyspark only inside driver-side functions for the same reason.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import importlib
import os
import pickle
import runpy
import shutil
import signal
import site
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from contracts.heartbeat import ATTEMPT_ENV, LAUNCH_DIR_ENV, read_beat, stack_path
from spark_jobs.launch_health import SilentRank, collect_stacks, culprit, find_stalled

LAUNCH_ID_ENV = "SPARK_COLLAB_LAUNCH_ID"
TAIL_LINES = 25
# Exception types that mean "my peer went away", i.e. a consequence of another rank's failure.
_COMM_ERRORS = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")
_COMM_PATTERNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL error")


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


# ----------------------------------------------------------------------------------------------
# Rank side: runs inside each torch process. No pyspark imports here.
# ----------------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _status_path(launch_dir: Path, rank: int, kind: str) -> Path:
    return launch_dir / f"rank-{rank}.{kind}"


def _record_error(launch_dir: Path, rank: int, exc: BaseException | None, note: str = "") -> None:
    """Write this rank's failure: when it happened, what type, the formatted traceback."""
    if exc is not None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = type(exc).__name__
    else:
        text, kind = note, "Signal"
    info = {"time": time.time(), "rank": rank, "type": kind, "traceback": text, "host": socket.gethostname()}
    _atomic_write(_status_path(launch_dir, rank, "error"), pickle.dumps(info))


def _start_rank(launch_dir: Path) -> int:
    """Announce this rank (pid file for the driver's kill path) and trap SIGTERM.

    torchrun stops surviving ranks with SIGTERM when one fails; recording that lets the driver
    tell the rank that failed from the ranks that were stopped because of it.
    """
    rank = _rank()
    launch_dir.mkdir(parents=True, exist_ok=True)
    os.environ[LAUNCH_DIR_ENV] = str(launch_dir)  # where training writes its progress heartbeat
    _dump_stacks_on_request(launch_dir, rank)
    _atomic_write(_status_path(launch_dir, rank, "pid"), f"{os.getpid()} {socket.gethostname()}".encode())

    def on_term(signum: int, _frame: Any) -> None:
        _record_error(
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
    calling ``_rank_entry`` in pytest must keep pytest's own exit status).
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:
        atexit.register(_exit_without_native_teardown)


def _split_reference(ref: str) -> tuple[str, str]:
    module_name, sep, attr = ref.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"function reference {ref!r}: expected 'package.module:function'")
    return module_name, attr


def resolve_function(fn: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    """``fn`` itself, or the function a ``"package.module:function"`` string names (imported now)."""
    if callable(fn):
        return fn
    module_name, attr = _split_reference(fn)
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"function reference {fn!r}: {type(target).__name__} is not callable")
    return target


def _rank_entry(payload: tuple[Callable[[Any], Any] | str, Any, str]) -> Any:
    """What every rank runs: ``fn(config)`` plus status bookkeeping."""
    fn, config, launch_dir_s = payload
    launch_dir = Path(launch_dir_s)
    rank = _start_rank(launch_dir)
    try:
        result = resolve_function(fn)(config)
    except BaseException as exc:
        _record_error(launch_dir, rank, exc)
        raise
    _atomic_write(_status_path(launch_dir, rank, "ok"), pickle.dumps(result))
    _exit_early_when_done()
    return result


PAYLOAD_NAME = "payload.pickle"
RANK_MODULE = "spark_jobs.launcher"  # what torchrun runs on every rank (`-m`)
_USAGE = "usage: python -m spark_jobs.launcher --launch-dir DIR (--call | SCRIPT [ARGS...])"


def _call_payload(launch_dir: Path) -> int:
    """``--call``: unpickle ``(fn, config)`` from the launch directory and run it via :func:`_rank_entry`.

    Plain ``pickle`` suffices: a module-level ``fn`` was pickled by reference, so only its own module
    is imported here (a by-value function pulls in ``pyspark.cloudpickle`` on its own).
    """
    fn, config = pickle.loads((launch_dir / PAYLOAD_NAME).read_bytes())
    _rank_entry((fn, config, str(launch_dir)))
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
            _record_error(launch_dir, rank, exc)
            raise
    except BaseException as exc:
        _record_error(launch_dir, rank, exc)
        raise
    _atomic_write(_status_path(launch_dir, rank, "ok"), pickle.dumps(None))
    _exit_early_when_done()
    return 0


def _rank_main(argv: Sequence[str]) -> int:
    """What every torch rank runs: ``python -m spark_jobs.launcher --launch-dir DIR ...``."""
    if len(argv) < 3 or argv[0] != "--launch-dir":
        print(_USAGE, file=sys.stderr)
        return 2
    launch_dir = Path(argv[1])
    if argv[2] == "--call":
        return _call_payload(launch_dir)
    return _run_script(launch_dir, argv[2], list(argv[3:]))


# ----------------------------------------------------------------------------------------------
# Driver side.
# ----------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None
    done: bool = False


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_errors(launch_dir: Path) -> list[dict[str, Any]]:
    errors = []
    for p in launch_dir.glob("rank-*.error"):
        try:
            errors.append(pickle.loads(p.read_bytes()))
        except (OSError, pickle.UnpicklingError, EOFError):
            continue
    return sorted(errors, key=lambda e: e["time"])


def _ranks_with(launch_dir: Path, kind: str) -> set[int]:
    return {int(p.name.split(".")[0].split("-")[1]) for p in launch_dir.glob(f"rank-*.{kind}")}


def _is_consequence(err: dict[str, Any]) -> bool:
    """True for errors that only say a peer disappeared or that we were told to stop."""
    if err["type"] == "Signal" or err["type"] in _COMM_ERRORS:
        return True
    return any(p in err["traceback"] for p in _COMM_PATTERNS)


def diagnose(launch_dir: Path, num_processes: int) -> RankFailure | None:
    """The failure to report, from the per-rank status files; None when no rank failed.

    Priority: the earliest real exception; else a rank that vanished without any status (os._exit,
    OOM kill, segfault) while others only saw their peer disappear; else the earliest error at all.
    """
    succeeded = _ranks_with(launch_dir, "ok")
    if len(succeeded) == num_processes:
        return None  # every rank recorded its result: what happened to a process afterwards is moot
    errors = _read_errors(launch_dir)
    started = _ranks_with(launch_dir, "pid")
    finished = succeeded | {e["rank"] for e in errors}
    silent = sorted(started - finished)
    primary = [e for e in errors if not _is_consequence(e)]
    others = ", ".join(f"rank {e['rank']}: {e['type']}" for e in errors)
    if primary:
        e = primary[0]
        last = e["traceback"].rstrip().splitlines()[-1] if e["traceback"].strip() else e["type"]
        return RankFailure(e["rank"], _tail(e["traceback"]), f"{last} (all ranks: {others})")
    if silent and (errors or len(started) == num_processes):
        r = silent[0]
        note = f"also: {others}" if others else "no other rank reported"
        msg = f"rank {r} died without a Python traceback (os._exit, signal or out-of-memory kill); {note}"
        tail = "(no traceback: the process exited abruptly; see the rank's output above)"
        return RankFailure(r, tail, msg, abrupt=True)
    if errors:
        e = errors[0]
        return RankFailure(e["rank"], _tail(e["traceback"]), f"{e['type']} (all ranks: {others})")
    return None


def _kill_launch(launch_dir: Path, launch_id: str) -> None:
    """SIGKILL every process of this launch on this machine: tagged ones and the ranks' pid files."""
    me = os.getpid()
    victims: set[int] = set()
    host = socket.gethostname()
    for p in launch_dir.glob("rank-*.pid"):
        try:
            pid_s, pid_host = p.read_text().split()
            if pid_host == host:
                victims.add(int(pid_s))
        except (OSError, ValueError):
            continue
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


# Started in place of TorchDistributor's `python -m pyspark.ml.torch.torch_run_process_wrapper`,
# which spends ~0.5 s importing pyspark.ml only to watch its parent. This keeps the watch (the
# kernel sends torchrun SIGTERM when the thread that started it exits, so a driver or Spark task
# that dies takes its ranks with it) and then becomes torchrun, in a new session: a terminal's
# Ctrl-C then reaches the driver alone, which stops the launch in order, rather than every rank
# (each printing a KeyboardInterrupt traceback). argv[1] is the starter's pid: if it is already
# gone, nothing starts.
_TORCHRUN_EXEC = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (Linux)
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("torchrun not started: the process that launched it has exited")
os.setsid()  # out of the terminal's process group: Ctrl-C goes to the driver, which stops the ranks
os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *sys.argv[2:]])
"""


def _extra_import_paths() -> list[str]:
    """This process's ``sys.path`` entries that a fresh interpreter would not find by itself.

    The ranks are new interpreters: they see ``PYTHONPATH``, the standard library and
    site-packages, but not what was added to ``sys.path`` at run time, such as Spark's
    ``--py-files`` (added by the Python worker in each Spark task), a notebook's or script's own
    directory, or a path a test inserted. Handing these on lets a rank import what this process
    can: our packages from a ``--py-files`` zip, or the module of a function passed by reference.
    """
    paths = sysconfig.get_paths()
    stdlib = tuple(os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib"))
    site_dirs = {os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages())}
    out: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        real = os.path.realpath(path)
        if real in site_dirs or any(real == d or real.startswith(d + os.sep) for d in stdlib):
            continue
        if os.path.exists(path) and path not in out:
            out.append(path)
    return out


@contextlib.contextmanager
def _environ_set(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (torchrun and its ranks inherit os.environ)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _pythonpath_for_ranks() -> contextlib.AbstractContextManager[None]:
    """``PYTHONPATH`` extended by :func:`_extra_import_paths` while torchrun starts."""
    old = os.environ.get("PYTHONPATH")
    return _environ_set("PYTHONPATH", os.pathsep.join([*_extra_import_paths(), *([old] if old else [])]))


def _omp_threads_for_ranks(per_node: int) -> contextlib.AbstractContextManager[None]:
    """``OMP_NUM_THREADS=1`` for the ranks of a node with several, unless the user set it.

    That is the value torchrun itself picks then (one thread per rank, so ranks do not fight over
    the cores), but torchrun also prints a banner about it on every launch when it has to pick.
    """
    if "OMP_NUM_THREADS" in os.environ or per_node < 2:
        return contextlib.nullcontext()
    return _environ_set("OMP_NUM_THREADS", "1")


@dataclass(frozen=True)
class _TorchrunStarter:
    """TorchDistributor's ``run_pytorch_file_fn`` hook: how each node starts its torchrun.

    TorchDistributor still decides everything else: local or distributed mode, the barrier Spark
    tasks and their rendezvous address, GPU assignment, log streaming. This only replaces the
    process chain under it, so that nothing on the path to a rank's first step imports pyspark:

    - torchrun starts through :data:`_TORCHRUN_EXEC` instead of TorchDistributor's wrapper;
    - every rank runs ``python -m spark_jobs.launcher`` (stdlib imports only) instead of a script
      that imports ``pyspark.cloudpickle`` to unpickle the function.

    Runs on the driver in local mode and inside each barrier task in distributed mode (so it must
    pickle: a frozen dataclass of plain values). For a function launch it writes the pickled
    ``(fn, config)`` into the launch directory on its node first, and returns rank 0's result when
    rank 0 ran on its node (TorchDistributor then ships partition 0's return value to the driver).
    """

    launch_dir: str
    rank_args: tuple[str, ...]
    payload: bytes | None = None
    attempt: int = 0  # of a restarting launch; the ranks read it (fault injection fires per attempt)

    def __call__(self, input_params: dict[str, Any], module: str, *_: Any, **__: Any) -> Any:
        from pyspark.ml.torch.distributor import TorchDistributor

        launch_dir = Path(self.launch_dir)
        launch_dir.mkdir(parents=True, exist_ok=True)
        if self.payload is not None:
            _atomic_write(launch_dir / PAYLOAD_NAME, self.payload)
        torchrun_args, per_node = TorchDistributor._get_torchrun_args(
            input_params["local_mode"], input_params["num_processes"]
        )
        command = [
            sys.executable,
            "-c",
            _TORCHRUN_EXEC,
            str(os.getpid()),
            *torchrun_args,
            f"--nproc_per_node={per_node}",
            "-m",
            module,
            "--launch-dir",
            str(launch_dir),
            *self.rank_args,
        ]
        # The attempt is set here, not only on the driver: in distributed mode this runs in a Spark
        # task, whose environment is the executor's.
        with (
            _pythonpath_for_ranks(),
            _omp_threads_for_ranks(per_node),
            _environ_set(ATTEMPT_ENV, str(self.attempt)),
        ):
            TorchDistributor._execute_command(
                command, log_streaming_client=input_params.get("log_streaming_client")
            )
        ok0 = _status_path(launch_dir, 0, "ok")
        if self.payload is not None and ok0.exists():
            return pickle.loads(ok0.read_bytes())
        return None


def _start(distributor: Any, starter: _TorchrunStarter) -> Any:
    """``distributor._run(module, starter)``: TorchDistributor's own run path with our torchrun starter.

    ``_run(train_object, run_pytorch_file_fn, ...)`` is the hook ``run`` itself goes through
    (pyspark 3.4 to 4.x); a pyspark without it is refused rather than silently run another way.
    """
    run = getattr(distributor, "_run", None)
    if run is None:
        raise LaunchError(
            "this pyspark's TorchDistributor has no _run(train_object, run_pytorch_file_fn) hook; "
            "spark-collab needs pyspark 4.x (pip install 'pyspark>=4,<5')"
        )
    return run(RANK_MODULE, starter)


def _make_distributor(num_processes: int, local_mode: bool, use_gpu: bool) -> Any:
    from pyspark.ml.torch.distributor import TorchDistributor

    return TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)


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
    start = time.monotonic()
    timed_out = False
    stalled: RankStalled | None = None
    first_failure: float | None = None
    # Local-mode torchrun inherits os.environ: the tag lets the kill path find every process of
    # this launch (guard/torchrun agent, ranks) and nothing else.
    with _environ_set(LAUNCH_ID_ENV, launch_id):
        thread.start()
        try:
            while not outcome.done:
                thread.join(0.2)
                now = time.monotonic()
                if first_failure is None and any(launch_dir.glob("rank-*.error")):
                    first_failure = now
                if stall_timeout_s and first_failure is None:
                    stalled = _stalled(launch_dir, stall_timeout_s)
                if (
                    now - start > timeout_s
                    or stalled is not None
                    or (first_failure is not None and now - first_failure > failure_grace_s)
                ):
                    timed_out = now - start > timeout_s
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
    ok0 = _status_path(launch_dir, 0, "ok")
    all_ok = len(_ranks_with(launch_dir, "ok")) == num_processes
    if outcome.error is not None and not all_ok:
        raise LaunchError(f"TorchDistributor failed: {_tail(str(outcome.error), 15)}") from outcome.error
    if outcome.error is not None:
        print(
            "warning: every rank recorded its result, then a rank process exited abnormally "
            f"(TorchDistributor: {_tail(str(outcome.error), 1)}); keeping the results",
            file=sys.stderr,
        )
    if ok0.exists():
        return pickle.loads(ok0.read_bytes())
    if not outcome.done:
        raise LaunchError("launch was stopped but TorchDistributor did not return")
    # No shared filesystem between driver and rank 0: TorchDistributor's own return is rank 0's
    # in distributed mode (it collects partition 0), which is the only mode where this happens.
    return outcome.result


def _stalled(launch_dir: Path, stall_timeout_s: float) -> RankStalled | None:
    """A :class:`RankStalled` naming the rank to blame, with stacks, when ranks went silent."""
    done = _ranks_with(launch_dir, "ok") | _ranks_with(launch_dir, "error")
    silent = find_stalled(launch_dir, stall_timeout_s, done)
    if not silent:
        return None
    silent = collect_stacks(launch_dir, silent)
    blamed = culprit(silent)
    return RankStalled(blamed, [r for r in silent if r is not blamed], stall_timeout_s)


def _last_steps(launch_dir: Path) -> dict[int, int]:
    """Each rank's last heartbeat step in ``launch_dir``."""
    steps = {}
    for path in launch_dir.glob("rank-*.beat"):
        beat = read_beat(path)
        if beat is not None:
            steps[beat.rank] = beat.step
    return steps


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
    """Make the launch directory, run TorchDistributor with a :class:`_TorchrunStarter` for
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
        distributor = _make_distributor(num_processes, local_mode, use_gpu)
        starter = _TorchrunStarter(str(path), rank_args, payload, attempt)
        return _run_bounded(
            lambda: _start(distributor, starter),
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


def _restart_record(attempt: int, exc: LaunchError, resume_step: int | None) -> RestartRecord:
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


def _with_restarts(
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
            record = _restart_record(attempt + 1, exc, resume_step)
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
        _split_reference(fn)  # a malformed reference fails here, not on every rank
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

    return _with_restarts(attempt, timeout_s, max_restarts, before_restart, restarts)


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

    _with_restarts(attempt, timeout_s, max_restarts, lambda: None, restarts)


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
