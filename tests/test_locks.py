"""One job at a time per output: the lock, a stale lock taken over, and two real concurrent commands."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, spark_args
from train_shards import blob_shards

from spark_jobs.common import locks
from spark_jobs.common.locks import OutputLocked, lock_path, output_lock

HOLD = """
import sys, time
from spark_jobs.common.locks import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_subprocess(target: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding the lock of ``target``; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), str(seconds)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_pid_and_host(tmp_path: Path) -> None:
    target = tmp_path / "out"
    holder = hold_in_subprocess(target)
    try:
        with pytest.raises(OutputLocked) as caught, output_lock(target):
            pass
        message = str(caught.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "--output" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_lock_from_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "out"
    holder = hold_in_subprocess(target)
    holder.send_signal(signal.SIGKILL)  # no clean-up: its lock file stays, recording it
    holder.wait()
    recorded = json.loads(lock_path(target).read_text())
    assert recorded["pid"] == holder.pid
    with output_lock(target) as held:
        assert held.stale is not None and held.stale.pid == holder.pid
        assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    assert not lock_path(target).exists()


def test_lock_nests_in_one_thread_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out"
    with output_lock(target), output_lock(target):
        assert lock_path(target).exists()
    # The directories made for the lock file held nothing else: they are gone again.
    assert list(tmp_path.iterdir()) == []


def test_without_flock_a_recorded_live_holder_is_respected(tmp_path: Path, monkeypatch) -> None:
    """Filesystems without flock: the recorded pid decides (alive: refused; gone: taken over)."""

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    target = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time(), "command": "x"}
    try:
        lock_path(target).write_text(json.dumps(record))
        with (
            pytest.raises(OutputLocked, match=rf"pid {sleeper.pid} .*if that job is gone, delete"),
            output_lock(target),
        ):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(target) as held:  # the recorded process has exited now
        assert held.stale is not None and held.stale.pid == sleeper.pid
    remote = {**record, "host": "some-other-host"}
    lock_path(target).write_text(json.dumps(remote))
    with pytest.raises(OutputLocked, match="some-other-host"), output_lock(target):
        pass
    assert locks._held == {}


# --------------------------------------------------------------------------- two real commands


def _env() -> dict[str, str]:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def _wait_for_lock(target: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not lock_path(target).exists() or not lock_path(target).read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "first command never took its lock"
        time.sleep(0.05)


def test_two_wordcounts_into_one_output(tmp_path: Path) -> None:
    first_in, second_in = tmp_path / "a.txt", tmp_path / "b.txt"
    first_in.write_text("alpha beta beta\n" * 2000)
    second_in.write_text("gamma\n")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "spark_jobs", "wordcount", *spark_args()]
    first = subprocess.Popen(
        [*cli, str(first_in), "--output", str(out), "--overwrite"],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_lock(out, first)
    second = subprocess.run(
        [*cli, str(second_in), "--output", str(out), "--overwrite"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.startswith("error: ") and second.stderr.count("\n") == 1, second.stderr
    assert f"in use by another job (pid {first.pid} on host {socket.gethostname()}" in second.stderr
    import pyarrow.parquet as pq

    counts = dict(zip(*pq.read_table(out).to_pydict().values(), strict=True))
    assert counts == {"alpha": 2000, "beta": 4000}  # the first job's result, whole
    assert not lock_path(out).exists()


@pytest.mark.distributed
def test_two_trains_into_one_run_dir(tmp_path: Path) -> None:
    shards = blob_shards(tmp_path / "shards", n_train=64, shards=1)
    run_dir = tmp_path / "run"
    sets = [f"data.shards='{shards}'", f"run.dir='{run_dir}'", "launch.num_processes=1"]
    sets += ["train.epochs=1", "train.batch_size=8", "run.plots=false"]
    cli = [
        sys.executable,
        "-m",
        "spark_jobs",
        "train",
        *spark_args(),
        *(x for s in sets for x in ("--set", s)),
    ]
    first = subprocess.Popen(
        cli, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_lock(run_dir, first)
    second = subprocess.run([*cli, "--overwrite"], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    assert "done:" in first_out
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.startswith("error: run.dir ") and second.stderr.count("\n") == 1, second.stderr
    assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert json.loads((run_dir / "result.json").read_text())["world_size"] == 1
