"""The driver JVM: killed during a job (one line, exit 1), killed while the ranks train (the run
completes, exit 0 with a warning), and always gone by the time a command returns.

Each test runs the real CLI in a subprocess and finds its JVM as the child process named ``java``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, spark_args
from restart_runs import wait_for_staged_file
from train_shards import blob_shards


def _env() -> dict[str, str]:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def java_child(parent: int) -> int | None:
    """The pid of the ``java`` process whose parent is ``parent`` (the job's driver JVM), if any."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == parent and comm == "java":
            return int(stat.parent.name)
    return None


def wait_until(condition, proc: subprocess.Popen, timeout_s: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"command ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_jvm_killed_during_wordcount_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "big.txt"
    text.write_text(" ".join(f"w{i % 50_000}" for i in range(3_000_000)) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spark_jobs", "wordcount", *spark_args(), str(text), "--output", str(out)]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_until(lambda: any(tmp_path.glob(".out.staging-*")), proc, what="the write to start")
    jvm = java_child(proc.pid)
    assert jvm is not None
    os.kill(jvm, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"driver JVM (pid {jvm}) died during the job" in errors[0], err[-3000:]
    assert "Traceback" not in err and "py4j" not in err.lower(), err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt"]  # no output, no staging, no lock


SPY = """
import os, sys
import spark_jobs.common.session.jvm as session_jvm
seen = []
original = session_jvm.driver_jvm
def spy():
    proc = original()
    if proc is not None and proc not in seen:
        seen.append(proc)
    return proc
session_jvm.driver_jvm = spy
from spark_jobs.wordcount import main
code = main(sys.argv[1:])
# Read by the test: the JVM's pid and whether a process with that pid still runs java.
for proc in seen:
    try:
        alive = "java" in open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        alive = False
    print(f"jvm {proc.pid} alive={alive}")
sys.exit(code)
"""


def test_command_returns_after_its_jvm_has_exited(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one two two\n")
    argv = [*spark_args(), str(tmp_path / "in.txt"), "--output", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-c", SPY, *argv],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("jvm ")]
    assert len(reports) == 1 and reports[0].endswith("alive=False"), proc.stdout


@pytest.mark.distributed
def test_jvm_killed_while_ranks_train_still_reports_the_run(tmp_path: Path) -> None:
    shards = blob_shards(tmp_path / "shards", n_train=1024, shards=1)
    run_dir = tmp_path / "run"
    sets = [f"data.shards='{shards}'", f"run.dir='{run_dir}'", "launch.num_processes=1"]
    sets += ["train.epochs=4", "train.batch_size=16", "run.plots=false"]
    cmd = [
        sys.executable,
        "-m",
        "spark_jobs",
        "train",
        *spark_args(),
        *(x for s in sets for x in ("--set", s)),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # The ranks write into the staged run directory until the run finishes.
    metrics = wait_for_staged_file(run_dir, "metrics.jsonl", 300, proc)
    assert metrics is not None
    wait_until(lambda: metrics.read_text().count("\n") >= 1, proc, what="the first epoch")
    assert not run_dir.exists()  # the ranks are still training
    jvm = java_child(proc.pid)
    assert jvm is not None
    os.kill(jvm, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "done:" in out and str(run_dir) in out
    assert "warning: could not stop Spark cleanly" in err, err[-3000:]
    assert "Traceback" not in err and "Py4J" not in err, err[-3000:]
    assert (run_dir / "result.json").exists()
