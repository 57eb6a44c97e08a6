"""The one way jobs get a SparkSession.

Precedence, lowest first: ``conf/spark/local.conf`` (spark-defaults format), properties that
``spark-submit`` already put on the JVM, then ``--master`` and ``--conf key=value`` from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs import jvm_cache
from spark_jobs.errors import JobInputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = PROJECT_ROOT / "conf" / "spark" / "local.conf"
LOG4J_CONF = PROJECT_ROOT / "conf" / "spark" / "log4j2.properties"
# How long a finished job waits for its driver JVM to exit (shutdown hooks: a second or two here).
JVM_EXIT_WAIT_S = 30.0


def read_spark_defaults(path: Path) -> dict[str, str]:
    """Parse a spark-defaults.conf style file: ``key value`` (or ``key=value``) per line, ``#`` comments."""
    props: dict[str, str] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1) if "=" not in line.split(None, 1)[0] else line.split("=", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise JobInputError(f"{path}:{line_no}: expected 'key value', got {raw!r}")
        props[parts[0].strip()] = parts[1].strip()
    return props


def parse_conf_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``--conf key=value`` arguments into a dict, rejecting anything without ``=``."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise JobInputError(
                f"--conf {pair!r}: expected key=value, e.g. --conf spark.sql.shuffle.partitions=8"
            )
        overrides[key.strip()] = value.strip()
    return overrides


def add_spark_arguments(parser: argparse.ArgumentParser) -> None:
    """The Spark options every job takes."""
    group = parser.add_argument_group("spark")
    group.add_argument(
        "--master",
        default=None,
        help="Spark master URL, e.g. local[2] or spark://host:7077; None: spark-submit's, else conf/spark/local.conf's",
    )
    group.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark property, repeatable",
    )
    group.add_argument(
        "--spark-defaults",
        default=str(DEFAULT_CONF),
        metavar="FILE",
        help="spark-defaults style file with base properties",
    )


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands Python the gateway through this variable.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def resolve_spark_conf(
    master: str | None,
    overrides: Mapping[str, str],
    defaults_file: str | Path | None = DEFAULT_CONF,
    submitted: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The properties a job's session is built with (without starting anything).

    ``submitted``: properties spark-submit already set (``--conf``, ``--properties-file``); they
    outrank the defaults file, as the precedence above says.
    """
    props: dict[str, str] = {}
    if defaults_file:
        path = Path(defaults_file)
        if path.exists():
            props.update(read_spark_defaults(path))
        elif Path(defaults_file) != DEFAULT_CONF:
            raise JobInputError(f"--spark-defaults {path}: file not found")
    for key in submitted or {}:
        props.pop(key, None)
    if _launched_by_spark_submit():
        # spark-submit already decided the master; our local default must not override it.
        props.pop("spark.master", None)
    if LOG4J_CONF.exists():
        opts = f"-Dlog4j2.configurationFile={LOG4J_CONF.as_uri()}"
        existing = props.get("spark.driver.extraJavaOptions", "")
        props["spark.driver.extraJavaOptions"] = f"{existing} {opts}".strip()
    props.update(overrides)
    if master:
        props["spark.master"] = master
    return props


# The master URLs Spark's own scheduler accepts (SparkContext.createTaskScheduler): anything else
# makes the JVM print a stack trace before Python sees the error, so it is refused before the JVM starts.
_MASTER_URL = re.compile(
    r"local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?"
    r"|local-cluster\[\s*[1-9]\d*\s*,\s*[1-9]\d*\s*,\s*[1-9]\d*\s*\]"
    r"|spark://.+|yarn|k8s://.+"
)


def check_master_url(master: str) -> None:
    """Refuse a master URL that Spark cannot parse, with the forms it can."""
    if not _MASTER_URL.fullmatch(master.strip()):
        raise JobInputError(
            f"--master {master}: not a Spark master URL; use local, local[N], local[*], spark://HOST:PORT, "
            "yarn or k8s://HOST:PORT (also checked: --conf spark.master and --spark-defaults)"
        )


def check_master_reachable(master: str, timeout_s: float = 3.0) -> None:
    """Fail fast when a standalone master (``spark://h1:p1[,h2:p2]``) accepts no connection.

    Without this, Spark's client retries registration for about a minute and then dies with a JVM
    stack trace ("All masters are unresponsive"); a closed port is answered in milliseconds.
    Other master URLs (local, yarn, k8s://) are left to Spark.
    """
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master[len("spark://") :].split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise JobInputError(f"--master {master}: expected spark://HOST:PORT, e.g. spark://127.0.0.1:7077")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            reasons.append(f"{address}: {exc.strerror or exc}")
    raise JobInputError(
        f"Spark master {master} is not reachable ({'; '.join(reasons)}): start the cluster "
        "(`make cluster-up` starts the local one) or pass --master local[*]"
    )


def _submitted_conf() -> dict[str, str]:
    """Properties spark-submit put on its (already running) JVM; empty when not under spark-submit."""
    if not _launched_by_spark_submit():
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


# The first line of every driver JVM that Spark 4 starts (it loads an incubating vector module). It
# says nothing about the job and would land right before the job's own output, or its error line.
JVM_NOISE_LINE = b"WARNING: Using incubator modules"


def _launch_gateway_quietly(props: Mapping[str, str]) -> None:
    """Start the driver JVM as ``SparkSession.builder`` would (same spark-submit options), but with
    its stderr passed through :func:`_forward_jvm_stderr`. No-op when a JVM is already up."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:
        return
    conf = SparkConf()
    for key, value in props.items():
        conf.set(key, value)
    read_end, write_end = os.pipe()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": write_end})
    except BaseException:
        os.close(read_end)
        # Interrupted (Ctrl-C, SIGTERM) or failed while the JVM was booting: pyspark has not handed
        # us its process yet, and a JVM that has not reached its stdin watch would outlive us.
        _kill_child_processes()
        raise
    finally:
        os.close(write_end)
    threading.Thread(target=_forward_jvm_stderr, args=(read_end,), name="jvm-stderr", daemon=True).start()
    SparkContext._gateway = gateway
    SparkContext._jvm = gateway.jvm


def _kill_child_processes() -> None:
    """SIGKILL this process's direct children (Linux ``/proc``; elsewhere nothing to do)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command name: state, then the parent pid.
            parent = stat.read_text().rpartition(")")[2].split()[1]
        except (OSError, IndexError):
            continue
        if parent == me:
            with contextlib.suppress(OSError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def _forward_jvm_stderr(read_end: int) -> None:
    """Copy the JVM's stderr to ours byte for byte (Spark's warnings and errors), minus its first line
    when that is :data:`JVM_NOISE_LINE`. Always drains the pipe, so the JVM never blocks on it."""
    head: bytes | None = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            if head is not None:
                head += chunk
                if b"\n" not in head and len(head) < 4096:
                    continue
                first, _, rest = head.partition(b"\n")
                chunk, head = (rest if first.startswith(JVM_NOISE_LINE) else head), None
            with contextlib.suppress(OSError):  # our stderr closed: keep draining regardless
                view = memoryview(chunk)
                while view:
                    view = view[os.write(2, view) :]


def get_spark_session(
    app_name: str,
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
    defaults_file: str | Path | None = DEFAULT_CONF,
) -> SparkSession:
    """Build (or reuse) the SparkSession for a job.

    Executors must run the same interpreter as the driver, otherwise they miss our dependencies
    (rjieba, pyarrow, torch) or run another Python version; ``PYSPARK_PYTHON`` pins that.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    submitted = _submitted_conf()
    props = resolve_spark_conf(master, conf or {}, defaults_file, submitted)
    effective = props.get("spark.master") or submitted.get("spark.master")
    if effective:
        check_master_url(effective)  # a mistake even when a running session is reused
    if _session_running():
        # Reused (tests, notebooks, the demo running job after job): only runtime SQL settings can
        # still change, and handing the builder the rest makes Spark warn on every reuse.
        spark = SparkSession.builder.getOrCreate()
        for key, value in props.items():
            if spark.conf.isModifiable(key):
                spark.conf.set(key, value)
        return spark
    if effective:
        check_master_reachable(effective)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # we start the JVM (not spark-submit)
        props = jvm_cache.with_archive(props)
        _launch_gateway_quietly(props)
    builder = SparkSession.builder.appName(app_name)
    for key, value in props.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _quiet_lost_jvm_connections(spark)
    return spark


def _quiet_lost_jvm_connections(spark: SparkSession) -> None:
    """Keep pyspark's accumulator server from printing a traceback when its JVM connection ends
    abruptly (the driver JVM died): the job reports that itself, in one line. Other errors of the
    server are printed as before."""
    server = getattr(spark.sparkContext, "_accumulatorServer", None)
    if server is None or getattr(server, "_quiet_lost_jvm", False):
        return
    original = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (EOFError, ConnectionError)):
            original(request, client_address)

    server.handle_error = handle_error
    server._quiet_lost_jvm = True


def session_from_args(app_name: str, args: argparse.Namespace) -> SparkSession:
    """Session for a job whose parser used :func:`add_spark_arguments`."""
    return get_spark_session(
        app_name,
        master=args.master,
        conf=parse_conf_overrides(args.conf),
        defaults_file=args.spark_defaults,
    )


# Sessions being started by job_session_in_background. Whoever asks whether a session is running
# waits for these first: a start whose block has already failed stops its session when it is up,
# and that must not be mistaken for a session someone else can keep using.
_starting: set[threading.Thread] = set()


def _session_running() -> bool:
    """Whether this process already has a live SparkContext (whatever thread started it).

    Not ``SparkSession.getActiveSession()``: that is per thread (py4j pins a JVM thread to each
    Python thread), so it misses a session started in another thread.
    """
    for thread in list(_starting):
        if thread is not threading.current_thread():
            thread.join()
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


# A driver JVM that was found dead when its session was stopped: the job's own error, reported
# after that stop, is explained by it (see jvm_exit_code).
_dead_jvm: subprocess.Popen | None = None


def driver_jvm() -> subprocess.Popen | None:
    """The driver JVM process that this Python process launched, or None (none yet, or spark-submit's)."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    return proc if isinstance(proc, subprocess.Popen) else _dead_jvm


def jvm_exit_code() -> int | None:
    """The driver JVM's exit code once it has exited (negative: killed by that signal), else None."""
    proc = driver_jvm()
    return None if proc is None else proc.poll()


def stop_session(spark: SparkSession, quiet: bool = False, jvm_wait_s: float = JVM_EXIT_WAIT_S) -> None:
    """Stop ``spark``, then end the driver JVM this process started and wait (bounded) until it has exited.

    A JVM that died during the job cannot be stopped cleanly; that is one warning line (none
    with ``quiet``, when the job's own error is being reported), never an exception: the job's
    results are already written. Waiting for the JVM means a command returns only once its JVM
    is gone, so scripts that run jobs back to back never have two JVMs at once.
    """
    import warnings

    from py4j.protocol import Py4JError

    global _dead_jvm
    proc = driver_jvm()
    _dead_jvm = proc if proc is not None and proc.poll() is not None else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pyspark's own "unable to cleanly shutdown"
            spark.stop()
    except (Py4JError, OSError) as exc:
        _forget_session()
        if not quiet:
            code = jvm_exit_code()
            why = f"it had exited with code {code}" if code is not None else str(exc).splitlines()[0]
            print(f"warning: could not stop Spark cleanly ({why}); the job itself completed", file=sys.stderr)
    if proc is not None:
        _end_jvm(proc, jvm_wait_s)


def _forget_session() -> None:
    """Clear pyspark's record of a session whose JVM is gone, so a later job can start a new one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql.context import SQLContext

    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SQLContext._instantiatedContext = None
    SparkContext._active_spark_context = None


def _end_jvm(proc: subprocess.Popen, wait_s: float) -> None:
    """Close the gateway and the JVM's stdin (Spark's gateway server exits at end of input), then wait."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    SparkContext._gateway = None
    SparkContext._jvm = None
    if gateway is not None:
        with contextlib.suppress(Exception):
            gateway.shutdown()
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def job_session(app_name: str, args: argparse.Namespace) -> Iterator[SparkSession]:
    """Session for one job run; stopped at the end unless the caller already had one running.

    Reusing a live session (tests, notebooks, a driver running several jobs) avoids paying
    JVM start-up per job; a session we started ourselves is always stopped (with its JVM), even
    on failure.
    """
    had_session = _session_running()
    spark = session_from_args(app_name, args)
    try:
        yield spark
    except BaseException:
        if not had_session:
            stop_session(spark, quiet=True)
        raise
    if not had_session:
        stop_session(spark)


@contextmanager
def job_session_in_background(
    app_name: str, args: argparse.Namespace
) -> Iterator[Callable[[], SparkSession]]:
    """:func:`job_session`, started in a background thread so the JVM boots while the block works.

    The block gets a function that waits for the session and returns it. A command that loads
    its config and imports torch first (about 1 s here) overlaps that with JVM start-up (about
    5 s here) instead of paying both in turn.

    If the block fails before it asked for the session, its error is not held up by the start-up:
    the session is stopped by the starting thread once it is up (or by the process exit, which
    ends the JVM with it). A session that we started is always stopped; one the caller already had
    is left running.
    """
    from pyspark.sql import SparkSession

    had_session = _session_running()
    started: dict[str, Any] = {}
    lock = threading.Lock()

    def start() -> None:
        try:
            spark = session_from_args(app_name, args)
            with lock:
                started["spark"] = spark
                abandoned = started.get("abandoned", False)
            if abandoned and not had_session:
                stop_session(spark, quiet=True)
        except BaseException as exc:  # handed to the waiting caller
            started["error"] = exc
        finally:
            _starting.discard(threading.current_thread())

    thread = threading.Thread(target=start, name="spark-session-start", daemon=True)
    _starting.add(thread)
    thread.start()

    def wait() -> SparkSession:
        thread.join()
        if "error" in started:
            raise started["error"]
        # Make it this thread's active session too (py4j pins one JVM thread per Python thread).
        return SparkSession.builder.getOrCreate()

    finished = False
    try:
        yield wait
        finished = True
    finally:
        if finished:
            thread.join()
        with lock:
            started["abandoned"] = True
            spark = started.get("spark")
        if spark is not None and not had_session:
            stop_session(spark, quiet=not finished)
