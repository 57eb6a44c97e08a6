"""The driver JVM's stderr filter: which text reaches the terminal, fed whole or byte by byte."""

from __future__ import annotations

import pytest

from spark_jobs.common.session import stderr_filter
from spark_jobs.common.session.stderr_filter import JvmStderrFilter

FIRST = b"WARNING: Using incubator modules: jdk.incubator.vector\n"
# As a pyspark worker daemon prints it when the JVM hangs up on it mid-write.
DAEMON_STACK = (
    b"Traceback (most recent call last):\n"
    b'  File "/x/.venv/lib/python3.11/site-packages/pyspark/python/lib/pyspark.zip/pyspark/daemon.py",'
    b" line 264, in manager\n"
    b'  File "/x/.venv/lib/python3.11/site-packages/pyspark/python/lib/pyspark.zip/pyspark/daemon.py",'
    b" line 95, in worker\n"
    b"BrokenPipeError: [Errno 32] Broken pipe\n"
)
USER_STACK = (
    b"Traceback (most recent call last):\n"
    b'  File "/x/job.py", line 3, in <module>\n'
    b"    main()\n"
    b"ValueError: bad value\n"
)
WARN = b"05:12:01 WARN SparkContext: something worth reading\n"


def through(data: bytes, piece: int) -> bytes:
    """``data`` fed in pieces of ``piece`` bytes (0: at once), then closed."""
    keep_back = JvmStderrFilter()
    if piece == 0:
        return keep_back.feed(data) + keep_back.close()
    out = b"".join(keep_back.feed(data[i : i + piece]) for i in range(0, len(data), piece))
    return out + keep_back.close()


@pytest.mark.parametrize("piece", [0, 1, 7])
def test_noise_is_kept_back_and_the_rest_passes_in_order(piece: int) -> None:
    data = FIRST + WARN + DAEMON_STACK + USER_STACK + WARN
    assert through(data, piece) == WARN + USER_STACK + WARN


@pytest.mark.parametrize("piece", [0, 1])
def test_a_later_incubator_line_and_a_lost_connection_outside_pyspark_pass(piece: int) -> None:
    own_eof = DAEMON_STACK.replace(b"pyspark/daemon.py", b"spark_jobs/wordcount/job.py").replace(
        b"BrokenPipeError: [Errno 32] Broken pipe", b"EOFError"
    )
    data = WARN + FIRST + own_eof
    assert through(data, piece) == data


@pytest.mark.parametrize("piece", [0, 1])
def test_the_daemons_failed_flush_line_goes_with_its_stack(piece: int) -> None:
    flush_failed = b"PySpark daemon failed to flush the output to the worker process:\n" + DAEMON_STACK
    alone = b"PySpark daemon failed to flush the output to the worker process:\n"
    assert through(WARN + flush_failed + WARN, piece) == WARN + WARN
    # Not followed by a stack: nothing to hide, the line passes.
    assert through(WARN + alone + WARN, piece) == WARN + alone + WARN


def test_an_unfinished_stack_comes_out_at_the_end() -> None:
    cut = DAEMON_STACK[: DAEMON_STACK.rindex(b"BrokenPipe")]
    assert through(WARN + cut, 0) == WARN + cut


def test_partial_lines_pass_at_once_so_a_progress_bar_still_moves() -> None:
    keep_back = JvmStderrFilter()
    assert keep_back.feed(FIRST) == b""
    assert keep_back.feed(b"[Stage 0:>   (0 + 2) / 2]\r") == b"[Stage 0:>   (0 + 2) / 2]\r"
    assert keep_back.feed(b"[Stage 0:=>  (1 + 1) / 2]\r") == b"[Stage 0:=>  (1 + 1) / 2]\r"
    assert keep_back.feed(b"\n") == b"\n"
    # Only what could begin a traceback's first line waits for the rest of its line.
    assert keep_back.feed(b"Trace") == b""
    assert keep_back.feed(b"s of a run\n") == b"Traces of a run\n"


def test_kept_back_stacks_are_there_for_the_failure_log(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.common.cli import failure_log

    marker = DAEMON_STACK.replace(b"line 95", b"line 95123")
    through(FIRST + marker, 0)
    assert "line 95123" in stderr_filter.diverted_text()
    monkeypatch.setenv("SPARK_COLLAB_LOG_DIR", str(tmp_path))
    log = failure_log(ValueError("the job's own failure"))
    assert log is not None
    text = log.read_text()
    assert "ValueError: the job's own failure" in text and "line 95123" in text


def test_a_worker_stack_sent_through_the_driver_jvm_is_kept_back(spark, capfd) -> None:  # type: ignore[no-untyped-def]
    """The wiring: what a Python worker writes to stderr reaches ours through the driver JVM's
    forwarder, which holds the lost-connection stack back and keeps it for the failure log."""
    import time

    from spark_jobs.common.session import driver_jvm

    if driver_jvm() is None:
        pytest.skip("the session's JVM was not started by this process (its stderr is not filtered here)")
    noise = (DAEMON_STACK.replace(b"line 95", b"line 95777") + b"worker marker 41\n").decode()

    def write_to_worker_stderr(rows):  # type: ignore[no-untyped-def]
        # Runs in a Python worker (pickled by value: the test module is not importable there).
        import sys

        sys.stderr.write(noise)
        sys.stderr.flush()
        yield from rows

    spark.sparkContext.parallelize([1], 1).mapPartitions(write_to_worker_stderr).collect()
    err = ""
    deadline = time.monotonic() + 20
    while "worker marker 41" not in err and time.monotonic() < deadline:
        time.sleep(0.2)
        err += capfd.readouterr().err
    assert "worker marker 41" in err
    assert "line 95777" not in err and "BrokenPipeError" not in err
    assert "line 95777" in stderr_filter.diverted_text()
