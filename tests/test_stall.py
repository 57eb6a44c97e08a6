"""A stalled rank (it sleeps forever at a step) is found through its heartbeat, named with its last
step and its Python stack, and the launch is restarted; the restarted run completes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import spark_args
from restart_runs import sets
from train_shards import blob_shards

from contracts.heartbeat import Beat
from spark_jobs.launch.health import SilentRank, culprit, find_stalled, stalled_together

pytestmark = pytest.mark.distributed


def test_a_stalled_rank_is_named_with_its_stack_and_restarted(  # type: ignore[no-untyped-def]
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    shards = blob_shards(tmp_path / "shards", n_train=256, shards=2)
    run = tmp_path / "run"
    faults = ("fault.fail_rank=1", "fault.fail_at_step=12", "fault.mode=stall")
    watch = ("launch.stall_timeout_s=8", "launch.max_restarts=1")
    assert main(spark_args(*sets(shards, run, *faults, *watch))) == 0
    err = capsys.readouterr().err
    assert "restart 1/1: attempt 1: rank 1 stalled" in err
    stacks = err.split("--- rank 1 Python stacks ---")[1]
    assert "in maybe_fail" in stacks and "faults.py" in stacks  # where rank 1 sleeps
    (restart,) = json.loads((run / "result.json").read_text())["restarts"]
    assert restart["rank"] == 1 and restart["kind"] == "stalled" and restart["resume_step"] == 10
    assert "made no progress" in restart["reason"] and "stall_timeout_s=8" in restart["reason"]
    assert "also silent, waiting on it: rank 0" in restart["reason"]


def test_the_stalled_rank_is_told_from_the_ranks_waiting_for_it(tmp_path: Path) -> None:
    waiting = 'Current thread 0x1 (most recent call first):\n  File "/x/site-packages/torch/autograd/graph.py", line 8'
    sleeping = (
        'Current thread 0x2 (most recent call first):\n  File "/x/training/faults.py", line 50 in maybe_fail'
    )
    # The waiting rank's heartbeat lags (they are written at most every half second), yet the
    # sleeping rank is the one to blame.
    ranks = [SilentRank(0, 11, 6.0, 1, waiting), SilentRank(1, 12, 6.0, 2, sleeping)]
    assert culprit(ranks).rank == 1
    # Without stacks (ranks on other machines), the least progress decides.
    assert culprit([SilentRank(0, 11, 6.0, None), SilentRank(1, 12, 6.0, None)]).rank == 0


def test_only_started_unfinished_ranks_older_than_the_timeout_are_stalled(tmp_path: Path) -> None:
    from dataclasses import asdict

    from contracts.atomic import write_json_atomic

    for r in range(4):  # rank 3 has not beaten yet: its start-up is not judged
        (tmp_path / f"rank-{r}.pid").write_text(f"{100 + r} otherhost")
    write_json_atomic(tmp_path / "rank-0.beat", asdict(Beat(rank=0, step=7, unix=100.0, pid=100)))
    write_json_atomic(tmp_path / "rank-1.beat", asdict(Beat(rank=1, step=9, unix=108.0, pid=101)))
    write_json_atomic(tmp_path / "rank-2.beat", asdict(Beat(rank=2, step=3, unix=90.0, pid=102)))
    stalled = find_stalled(tmp_path, stall_timeout_s=5, done={2}, now=110.0)
    assert [(s.rank, s.step, s.pid) for s in stalled] == [(0, 7, None)]  # pid None: another host


def test_ranks_that_went_silent_with_the_first_one_are_judged_with_it(tmp_path: Path) -> None:
    from dataclasses import asdict

    from contracts.atomic import write_json_atomic

    for r in range(3):
        (tmp_path / f"rank-{r}.pid").write_text(f"{100 + r} otherhost")
    # Rank 0 waits in a collective since its beat at step 8; rank 1, the one that stopped, beat last
    # at step 12, a little later; rank 2 is still making progress.
    write_json_atomic(tmp_path / "rank-0.beat", asdict(Beat(rank=0, step=8, unix=100.0, pid=100)))
    write_json_atomic(tmp_path / "rank-1.beat", asdict(Beat(rank=1, step=12, unix=101.0, pid=101)))
    write_json_atomic(tmp_path / "rank-2.beat", asdict(Beat(rank=2, step=30, unix=108.5, pid=102)))
    assert stalled_together(tmp_path, stall_timeout_s=8, done=set(), now=107.0) == []
    together = stalled_together(tmp_path, stall_timeout_s=8, done=set(), now=108.5)
    assert [s.rank for s in together] == [0, 1]  # only rank 0 is past 8 s yet
