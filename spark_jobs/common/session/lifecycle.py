"""Getting a job its SparkSession, and stopping the session (and the JVM) that the job started.

Two start-up accelerations live here, both on unless ``SPARK_COLLAB_PLAIN_START=1``
(:data:`PLAIN_START_ENV`):

- :func:`job_session_in_background` starts the session in a background thread, so the JVM boots
  while the job loads its config and imports torch; plain: the session starts in the job's own
  thread when the job first asks for it;
- :func:`get_spark_session` maps the JVM class-data archive of :mod:`spark_jobs.common.jvm_cache` into a
  driver JVM it starts itself; plain: the JVM loads Spark's classes from the jars as usual
  (``SPARK_COLLAB_JVM_CACHE=off`` turns off the archive alone).

Driver only.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common import jvm_cache
from spark_jobs.common.session.conf import (
    DEFAULT_CONF,
    check_master_reachable,
    check_master_url,
    parse_conf_overrides,
    resolve_spark_conf,
    submitted_conf,
    under_spark_submit,
)
from spark_jobs.common.session.jvm import launch_gateway_quietly, quiet_lost_jvm_connections, stop_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PLAIN_START_ENV = "SPARK_COLLAB_PLAIN_START"


def start_accelerations_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """False when ``SPARK_COLLAB_PLAIN_START`` asks for Spark's plain start (no background start,
    no class-data archive)."""
    return environ.get(PLAIN_START_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def with_start_accelerations(props: Mapping[str, str]) -> dict[str, str]:
    """The properties of a driver JVM that this process starts: ``props`` plus the options that map
    the class-data archive, when the accelerations are on and an archive can match."""
    if not start_accelerations_enabled():
        return dict(props)
    return jvm_cache.with_archive(props)


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

    submitted = submitted_conf()
    props = resolve_spark_conf(master, conf or {}, defaults_file, submitted)
    effective = props.get("spark.master") or submitted.get("spark.master")
    if effective:
        check_master_url(effective)  # a mistake even when a running session is reused
    if session_running():
        # Reused (tests, notebooks, the demo running job after job): only runtime SQL settings can
        # still change, and handing the builder the rest makes Spark warn on every reuse.
        spark = SparkSession.builder.getOrCreate()
        for key, value in props.items():
            if spark.conf.isModifiable(key):
                spark.conf.set(key, value)
        return spark
    if effective:
        check_master_reachable(effective)
    if not under_spark_submit():  # the driver JVM is ours to start
        props = with_start_accelerations(props)
        launch_gateway_quietly(props)
    builder = SparkSession.builder.appName(app_name)
    for key, value in props.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    quiet_lost_jvm_connections(spark)
    return spark


def session_from_args(app_name: str, args: argparse.Namespace) -> SparkSession:
    """Session for a job whose parser used :func:`~spark_jobs.common.session.conf.add_spark_arguments`."""
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


def session_running() -> bool:
    """Whether this process already has a live SparkContext (whatever thread started it).

    Not ``SparkSession.getActiveSession()``: that is per thread (py4j pins a JVM thread to each
    Python thread), so it misses a session started in another thread.
    """
    for thread in list(_starting):
        if thread is not threading.current_thread():
            thread.join()
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


@contextmanager
def job_session(app_name: str, args: argparse.Namespace) -> Iterator[SparkSession]:
    """Session for one job run; stopped at the end unless the caller already had one running.

    Reusing a live session (tests, notebooks, a driver running several jobs) avoids paying
    JVM start-up per job; a session we started ourselves is always stopped (with its JVM), even
    on failure.
    """
    had_session = session_running()
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
    is left running. With ``SPARK_COLLAB_PLAIN_START=1`` there is no thread: the function starts
    the session itself, in the block's thread, the first time it is called.
    """
    if not start_accelerations_enabled():
        with _job_session_when_asked(app_name, args) as wait:
            yield wait
        return
    from pyspark.sql import SparkSession

    had_session = session_running()
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


@contextmanager
def _job_session_when_asked(app_name: str, args: argparse.Namespace) -> Iterator[Callable[[], SparkSession]]:
    """The plain start of :func:`job_session_in_background`: the session starts in the calling
    thread when the block first asks for it (a block that fails before then starts none)."""
    had_session = session_running()
    started: list[SparkSession] = []

    def start_or_get() -> SparkSession:
        if not started:
            started.append(session_from_args(app_name, args))
        return started[0]

    try:
        yield start_or_get
    except BaseException:
        if started and not had_session:
            stop_session(started[0], quiet=True)
        raise
    if started and not had_session:
        stop_session(started[0])
