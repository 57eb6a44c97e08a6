"""Automatic restarts on the live standalone cluster (distributed mode: one barrier task per rank).

Rank 1 is SIGKILLed at the same step in two attempts in a row. With ``launch.max_restarts=2`` the
run heals and ends bitwise equal to an undisturbed cluster run (``test_cluster.py``'s fixtures,
module-scoped: this module starts its own cluster and driver application); with
``launch.max_restarts=1`` it fails and names both kills.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_cluster as shared
from cluster_fixtures import Cluster, Driver
from test_cluster import (
    FAIL_AT_STEP,
    assert_same_state,
    model_state,
    read_result,
    train_args,
)

# test_cluster.py's fixtures, by name.
cluster = shared.cluster
driver = shared.driver
two_workers = shared.two_workers
digit_shards = shared.digit_shards
distributed_run = shared.distributed_run

pytestmark = [pytest.mark.cluster, pytest.mark.distributed]
# Rank 1 dies before step FAIL_AT_STEP in the first two attempts; a checkpoint every 10 steps
# (step 30 included) lets each attempt resume right there.
KILLED_TWICE = (
    "launch.local_mode=false",
    "fault.fail_rank=1",
    f"fault.fail_at_step={FAIL_AT_STEP}",
    "fault.mode=kill",
    "fault.attempts=2",
    "run.checkpoint_every=10",
    # Three attempts of a cluster launch: a minute each on a busy 2-core machine.
    "launch.timeout_s=900",
)
RESTARTS_TIMEOUT_S = 1000


def test_a_rank_killed_twice_heals_with_two_restarts(
    two_workers: Cluster, driver: Driver, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "healed"
    result = driver.run(
        *train_args(digit_shards, run_dir, *KILLED_TWICE, "launch.max_restarts=2"), timeout=RESTARTS_TIMEOUT_S
    )
    assert result["rc"] == 0, f"{result['stderr'][-3000:]}\n{driver.tail()}"
    healed, undisturbed = read_result(run_dir), read_result(distributed_run)
    restarts = healed["restarts"]
    assert [(r["attempt"], r["rank"], r["kind"]) for r in restarts] == [(1, 1, "killed"), (2, 1, "killed")]
    assert [r["resume_step"] for r in restarts] == [FAIL_AT_STEP // 10 * 10] * 2
    assert healed["steps"] == undisturbed["steps"]
    assert_same_state(model_state(run_dir), model_state(distributed_run), atol=0)
    for key in ("train_loss", "val_accuracy", "test_accuracy"):
        assert healed[key] == undisturbed[key], key


def test_two_kills_with_one_restart_fail_naming_both(
    two_workers: Cluster, driver: Driver, digit_shards: Path, tmp_path: Path
) -> None:
    args = train_args(digit_shards, tmp_path / "failed", *KILLED_TWICE, "launch.max_restarts=1")
    result = driver.run(*args, timeout=RESTARTS_TIMEOUT_S)
    assert result["rc"] == 1, driver.tail()
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert errors, result["stderr"][-3000:]
    assert "2 attempts failed (launch.max_restarts=1)" in errors[0]
    assert "attempt 1: rank 1 killed" in errors[0] and "attempt 2: rank 1 killed" in errors[0]
