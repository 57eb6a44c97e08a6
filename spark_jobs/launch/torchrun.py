"""How each node of a launch starts torchrun under TorchDistributor, and the command it runs.

TorchDistributor decides everything else: local or distributed mode, the barrier Spark tasks and
their rendezvous address, GPU assignment, log streaming. :class:`TorchrunStarter` (its
``run_pytorch_file_fn`` hook) only replaces the process chain under it, so that nothing on the path
to a rank's first step imports pyspark:

- torchrun starts through :data:`TORCHRUN_EXEC`, a parent-death guard, instead of TorchDistributor's
  ``pyspark.ml.torch.torch_run_process_wrapper`` (which spends ~0.5 s importing pyspark.ml only to
  watch its parent);
- every rank runs ``python -m spark_jobs.launch.rank`` (stdlib imports only) instead of a script
  that imports ``pyspark.cloudpickle`` to unpickle the function.

``SPARK_COLLAB_PLAIN_TORCHRUN=1`` on the driver switches the guard chain off: TorchDistributor then
builds and runs its own torchrun command (its wrapper, a script path), and only the rank entry
stays ours, so status files, diagnosis and restarts work the same.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.atomic import write_text_atomic
from contracts.heartbeat import ATTEMPT_ENV
from spark_jobs.launch import status
from spark_jobs.launch.errors import LaunchError

RANK_MODULE = "spark_jobs.launch.rank"  # what torchrun runs on every rank (`-m`)
PLAIN_TORCHRUN_ENV = "SPARK_COLLAB_PLAIN_TORCHRUN"
# The plain path runs a script file, not a module: this one, written into the launch directory.
PLAIN_ENTRY_NAME = "rank_main.py"
_PLAIN_ENTRY = "import sys\n\nfrom spark_jobs.launch.rank import main\n\nsys.exit(main(sys.argv[1:]))\n"

# torchrun itself, minus the traceback and failure table it prints when a rank fails: the driver
# names the failing rank from the status files, with that rank's own traceback.
TORCHRUN_MAIN = """\
import logging, sys
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main
# The agent logs each rank's exit and the signals it sends; the driver's report says it once.
logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
try:
    main()
except ChildFailedError:
    sys.exit(1)
"""

# Started in place of TorchDistributor's wrapper. It keeps the wrapper's watch (the kernel sends
# torchrun SIGTERM when the thread that started it exits, so a driver or Spark task that dies takes
# its ranks with it) and then becomes torchrun, in a new session: a terminal's Ctrl-C then reaches
# the driver alone, which stops the launch in order, rather than every rank (each printing a
# KeyboardInterrupt traceback). argv[1] is the starter's pid: if it is already gone, nothing starts.
TORCHRUN_EXEC = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (Linux)
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("torchrun not started: the process that launched it has exited")
os.setsid()  # out of the terminal's process group: Ctrl-C goes to the driver, which stops the ranks
os.execv(sys.executable, [sys.executable, "-c", TORCHRUN_MAIN, *sys.argv[2:]])
""".replace("TORCHRUN_MAIN", repr(TORCHRUN_MAIN))


def guard_chain_enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """False when ``SPARK_COLLAB_PLAIN_TORCHRUN`` asks for TorchDistributor's plain path."""
    return environ.get(PLAIN_TORCHRUN_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def torchrun_command(
    python: str,
    starter_pid: int,
    torchrun_args: Sequence[str],
    per_node: int,
    module: str,
    launch_dir: str,
    rank_args: Sequence[str],
) -> list[str]:
    """The guarded torchrun command line of one node.

    ``torchrun_args`` and ``per_node`` are what ``TorchDistributor._get_torchrun_args(local_mode,
    num_processes)`` returns for this node; ``starter_pid`` is the process that runs the command
    (the guard refuses to start when its parent is another one).
    """
    return [
        python,
        "-c",
        TORCHRUN_EXEC,
        str(starter_pid),
        *map(str, torchrun_args),
        f"--nproc_per_node={per_node}",
        "-m",
        module,
        "--launch-dir",
        launch_dir,
        *rank_args,
    ]


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
def environ_set(name: str, value: str) -> Iterator[None]:
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
    return environ_set("PYTHONPATH", os.pathsep.join([*_extra_import_paths(), *([old] if old else [])]))


def _omp_threads_for_ranks(per_node: int) -> contextlib.AbstractContextManager[None]:
    """``OMP_NUM_THREADS=1`` for the ranks of a node with several, unless the user set it.

    That is the value torchrun itself picks then (one thread per rank, so ranks do not fight over
    the cores), but torchrun also prints a banner about it on every launch when it has to pick.
    """
    if "OMP_NUM_THREADS" in os.environ or per_node < 2:
        return contextlib.nullcontext()
    return environ_set("OMP_NUM_THREADS", "1")


@dataclass(frozen=True)
class TorchrunStarter:
    """TorchDistributor's ``run_pytorch_file_fn`` hook: how each node starts its torchrun.

    Runs on the driver in local mode and inside each barrier task in distributed mode (so it must
    pickle: a frozen dataclass of plain values). For a function launch it writes the pickled
    ``(fn, config)`` into the launch directory on its node first, and returns rank 0's result when
    rank 0 ran on its node (TorchDistributor then ships partition 0's return value to the driver).
    """

    launch_dir: str
    rank_args: tuple[str, ...]
    payload: bytes | None = None
    attempt: int = 0  # of a restarting launch; the ranks read it (fault injection fires per attempt)
    guard: bool = True  # False: TorchDistributor's own torchrun command (PLAIN_TORCHRUN_ENV)

    @property
    def train_object(self) -> str:
        """What TorchDistributor is asked to run: our rank module, or on the plain path a script."""
        return RANK_MODULE if self.guard else str(Path(self.launch_dir) / PLAIN_ENTRY_NAME)

    def __call__(self, input_params: dict[str, Any], train_object: str, *_: Any, **__: Any) -> Any:
        from pyspark.ml.torch.distributor import TorchDistributor

        launch_dir = Path(self.launch_dir)
        launch_dir.mkdir(parents=True, exist_ok=True)
        if self.payload is not None:
            status.write_payload(launch_dir, self.payload)
        local_mode, num_processes = input_params["local_mode"], input_params["num_processes"]
        torchrun_args, per_node = TorchDistributor._get_torchrun_args(local_mode, num_processes)
        # The attempt is set here, not only on the driver: in distributed mode this runs in a Spark
        # task, whose environment is the executor's.
        with (
            _pythonpath_for_ranks(),
            _omp_threads_for_ranks(per_node),
            environ_set(ATTEMPT_ENV, str(self.attempt)),
        ):
            if self.guard:
                command = torchrun_command(
                    sys.executable,
                    os.getpid(),
                    torchrun_args,
                    per_node,
                    train_object,
                    str(launch_dir),
                    self.rank_args,
                )
                TorchDistributor._execute_command(
                    command, log_streaming_client=input_params.get("log_streaming_client")
                )
            else:
                write_text_atomic(launch_dir / PLAIN_ENTRY_NAME, _PLAIN_ENTRY)
                TorchDistributor._run_training_on_pytorch_file(
                    input_params, train_object, "--launch-dir", str(launch_dir), *self.rank_args
                )
        found, result = status.read_ok(launch_dir, 0)
        return result if self.payload is not None and found else None


def start(distributor: Any, starter: TorchrunStarter) -> Any:
    """``distributor._run(train_object, starter)``: TorchDistributor's own run path with our starter.

    ``_run(train_object, run_pytorch_file_fn, ...)`` is the hook ``run`` itself goes through
    (pyspark 3.4 to 4.x); a pyspark without it is refused rather than silently run another way.
    """
    run = getattr(distributor, "_run", None)
    if run is None:
        raise LaunchError(
            "this pyspark's TorchDistributor has no _run(train_object, run_pytorch_file_fn) hook; "
            "spark-collab needs pyspark 4.x (pip install 'pyspark>=4,<5')"
        )
    return run(starter.train_object, starter)


def make_distributor(num_processes: int, local_mode: bool, use_gpu: bool) -> Any:
    from pyspark.ml.torch.distributor import TorchDistributor

    return TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
