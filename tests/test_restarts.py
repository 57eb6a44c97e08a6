"""Automatic restarts in local mode, through the train command: a rank killed mid-run (SIGKILL)
is relaunched from the last checkpoint and the run ends bitwise equal to an uninterrupted one;
when restarts run out, every failure is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import spark_args
from restart_runs import EVERY, STEPS_PER_EPOCH, assert_same_run, sets
from train_shards import blob_shards

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=256, shards=2)


@pytest.fixture(scope="module")
def reference(spark, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    from spark_jobs.train import main

    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(spark_args(*sets(shards, run))) == 0
    return run


def test_a_killed_rank_is_restarted_from_the_last_checkpoint(  # type: ignore[no-untyped-def]
    spark, shards: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    run = tmp_path / "run"
    faults = ("fault.fail_rank=1", "fault.fail_at_step=14", "fault.mode=kill", "launch.max_restarts=1")
    # The last checkpoint before step 14: every EVERY steps and at each epoch end.
    resume = max(s for s in range(1, 14) if s % EVERY == 0 or s % STEPS_PER_EPOCH == 0)
    assert main(spark_args(*sets(shards, run, *faults))) == 0
    err = capsys.readouterr().err
    assert (
        "restart 1/1: attempt 1: rank 1 killed" in err and f"relaunching every rank from step {resume}" in err
    )
    (restart,) = json.loads((run / "result.json").read_text())["restarts"]
    assert restart["rank"] == 1 and restart["kind"] == "killed" and restart["attempt"] == 1
    assert restart["resume_step"] == resume == 10
    assert restart["last_step"] is not None and restart["last_step"] <= 14
    assert_same_run(reference, run)


def test_restarts_that_run_out_name_every_failure(  # type: ignore[no-untyped-def]
    spark, shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    faults = ("fault.fail_rank=1", "fault.fail_at_step=9", "fault.mode=kill", "fault.attempts=2")
    code = main(spark_args(*sets(shards, tmp_path / "run", *faults, "launch.max_restarts=1")))
    assert code == 1
    err = capsys.readouterr().err
    assert "2 attempts failed (launch.max_restarts=1)" in err
    assert "attempt 1: rank 1 killed" in err and "attempt 2: rank 1 killed" in err
