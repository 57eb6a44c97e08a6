"""Ctrl-C and SIGTERM on a command: one line, exit 130 / 143, every rank stopped, no process left,
and a training run stopped by SIGTERM resumes to exactly the uninterrupted result.

Real subprocesses and real signals. Ctrl-C is sent to the command's whole process group, as a
terminal does; SIGTERM to the command's process alone, as ``kill`` or a scheduler does. The runs
are held mid-training deterministically: rank 1 stalls at a step (fault injection), so the signal
lands while both ranks are alive and checkpoints exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import spark_args
from restart_runs import (
    alive,
    assert_same_run,
    descendants,
    environment,
    rank_pids,
    sets,
    staging_of,
    wait_for_staged_file,
)
from train_shards import blob_shards

from contracts.rundir import RunDir

pytestmark = pytest.mark.distributed
STALL_AT = 22  # checkpoints at steps 5, 8, 10, 15, 16 and 20 exist by then


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=256, shards=2)


def start_held_run(shards: Path, run: Path) -> subprocess.Popen[str]:
    """``spark-collab train`` in its own process group, held at step STALL_AT by a stalled rank 1."""
    hold = ("fault.fail_rank=1", f"fault.fail_at_step={STALL_AT}", "fault.mode=stall")
    argv = [sys.executable, "-m", "spark_jobs", "train", *sets(shards, run, *hold), *spark_args()]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        start_new_session=True,
    )


def stop_and_check(proc: subprocess.Popen[str], run: Path, send: object, code: int, line: str) -> None:
    """Wait for the held run, signal it with ``send()``, check the exit, the message, the leftovers."""
    try:
        record = RunDir.checkpoint_record(RunDir.at(".").step_checkpoint(20))
        written = wait_for_staged_file(run, str(record), 300, proc)
        assert written is not None
        below = descendants(proc.pid)
        ranks = rank_pids(RunDir.at(written.parent.parent).launch)
        assert len(ranks) == 2 and set(ranks) <= below
        send()  # type: ignore[operator]
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [p for p in below if alive(p)] == []
    # No staging directory is left; run.dir holds the resume point only, no result of a finished run.
    assert staging_of(run) is None
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "checkpoints", "metrics.jsonl"]


def test_sigterm_stops_every_rank_and_the_run_resumes_exactly(  # type: ignore[no-untyped-def]
    spark, shards: Path, tmp_path: Path
) -> None:
    from spark_jobs.train import main

    reference = tmp_path / "reference"
    assert main(spark_args(*sets(shards, reference))) == 0
    run = tmp_path / "run"
    proc = start_held_run(shards, run)
    stop_and_check(proc, run, lambda: os.kill(proc.pid, signal.SIGTERM), 143, "terminated (SIGTERM)")
    assert main(spark_args(*sets(shards, run, "run.resume=true"))) == 0
    assert_same_run(reference, run)


def test_ctrl_c_prints_one_line_and_leaves_nothing_behind(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start_held_run(shards, run)
    stop_and_check(proc, run, lambda: os.killpg(proc.pid, signal.SIGINT), 130, "interrupted")


@pytest.mark.parametrize("delay_s", [0.5, 2.0])
def test_sigterm_while_the_jvm_boots_leaves_no_jvm_behind(tmp_path: Path, delay_s: float) -> None:
    # A tag in the environment marks every process of this command, the JVM included (it inherits
    # the environment), so a JVM that outlived the command is found even after it was reparented.
    tag = f"SPARK_COLLAB_TEST_TAG={os.getpid()}-{delay_s}-{tmp_path.name}"
    text = tmp_path / "in.txt"
    text.write_text("a b c\n")
    env = {**environment(), tag.partition("=")[0]: tag.partition("=")[2]}
    argv = [sys.executable, "-m", "spark_jobs", "wordcount", str(text), "--output", str(tmp_path / "out")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import time

    time.sleep(delay_s)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 15
    while (left := _tagged(tag.encode())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the stopped command still alive: {left}"
    assert not (tmp_path / "out").exists()


def _tagged(tag: bytes) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if tag in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
