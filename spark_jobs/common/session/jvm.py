"""The driver JVM that a job starts itself: launched with its stderr filtered, stopped and waited for.

Under spark-submit the JVM is spark-submit's and none of this launches anything. Driver only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from spark_jobs.common.session.stderr_filter import JvmStderrFilter

# How long a finished job waits for its driver JVM to exit (shutdown hooks: a second or two here).
JVM_EXIT_WAIT_S = 30.0


def launch_gateway_quietly(props: Mapping[str, str]) -> None:
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
    """Copy the JVM's stderr to ours as it comes (Spark's warnings and errors), less what
    :class:`JvmStderrFilter` keeps back. Always drains the pipe, so the JVM never blocks on it."""
    keep_back = JvmStderrFilter()
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            _write_stderr(keep_back.feed(chunk))
    _write_stderr(keep_back.close())


def _write_stderr(data: bytes) -> None:
    with contextlib.suppress(OSError):  # our stderr closed: keep draining regardless
        view = memoryview(data)
        while view:
            view = view[os.write(2, view) :]


def quiet_lost_jvm_connections(spark: SparkSession) -> None:
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
