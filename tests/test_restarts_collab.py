"""Collaborative runs heal too: a checkpoint after every round (DML: epoch), and a restart resumes
from the last one; the result equals that of a run that never failed, bit for bit on CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import spark_args
from test_collab_runners import _digits, config, iid_clients
from train_shards import blob_shards

from contracts.checkpoints import latest_intact, read_record
from contracts.heartbeat import LAUNCH_DIR_ENV, heartbeat_path
from contracts.rundir import RunDir
from training.faults import InjectedFault

FEDAVG = """
[model]
name = "mlp784"
[data]
shards = "{shards}"
[optim]
lr = 0.05
decay = 0.0
[train]
batch_size = 32
[launch]
num_processes = 2
timeout_s = 240
[run]
dir = "{run}"
[collab]
mode = "fedavg"
rounds = 2
local_epochs = 1
"""
# 256 training rows in 2 shards: each rank's client takes 4 steps of 32 a round, so rank 1's
# step 5 falls in round 2, after the checkpoint of round 1 (8 steps of both ranks together).
STEPS_PER_ROUND = 4


@pytest.mark.distributed
def test_a_killed_collab_rank_resumes_from_the_last_round(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.collab import main

    shards = blob_shards(tmp_path / "shards", n_train=256, shards=2)
    runs = {}
    for name, extra in (
        ("plain", []),
        ("healed", ["fault.fail_rank=1", f"fault.fail_at_step={STEPS_PER_ROUND + 1}", "fault.mode=kill"]),
    ):
        config_path = tmp_path / f"{name}.toml"
        config_path.write_text(FEDAVG.format(shards=shards, run=tmp_path / name))
        sets = [x for item in [*extra, "launch.max_restarts=1"] for x in ("--set", item)]
        assert main(["--config", str(config_path), *sets, *spark_args()]) == 0
        runs[name] = json.loads((tmp_path / name / "result.json").read_text())
    (restart,) = runs["healed"]["restarts"]
    # Resumed from the checkpoint of round 1: both ranks' steps of that round together.
    assert (restart["rank"], restart["kind"], restart["resume_step"]) == (1, "killed", 2 * STEPS_PER_ROUND)
    record = read_record(RunDir.at(tmp_path / "healed").step_checkpoint(restart["resume_step"]))
    assert record is not None and record.epoch == 1
    assert "restarts" not in runs["plain"]

    # Without restarts the command fails, and keeps its checkpoints in run.dir: a second command
    # with run.resume=true continues from round 1 to the same end.
    config_path = tmp_path / "resumed.toml"
    config_path.write_text(FEDAVG.format(shards=shards, run=tmp_path / "resumed"))
    fail = ["fault.fail_rank=1", f"fault.fail_at_step={STEPS_PER_ROUND + 1}", "launch.max_restarts=0"]
    assert main(["--config", str(config_path), *_sets(fail), *spark_args()]) == 1
    assert (
        RunDir.at(tmp_path / "resumed").step_checkpoints()
        and not (tmp_path / "resumed" / "result.json").exists()
    )
    assert main(["--config", str(config_path), *_sets(["run.resume=true"]), *spark_args()]) == 0
    runs["resumed"] = json.loads((tmp_path / "resumed" / "result.json").read_text())

    timeless = [[{k: v for k, v in r.items() if k != "elapsed_s"} for r in runs[n]["history"]] for n in runs]
    assert timeless[0] == timeless[1] == timeless[2] and len(timeless[0]) == 2
    plain, *others = (torch.load(tmp_path / n / "peers.pt", weights_only=False) for n in runs)
    for other in others:
        for before, after in zip(plain["peers"], other["peers"], strict=True):
            assert before["state"].keys() == after["state"].keys()
            assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


def _sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


# ------------------------------------------------------------------------------------------------
# Resume in one process (world size 1): a run stopped by a fault and resumed from its last round's
# checkpoint ends with bitwise the parameters and history of a run that went straight through.
# ------------------------------------------------------------------------------------------------


def _in_one_process(mode: str, cfg: Any, train: Any, test: Any) -> dict[str, Any]:
    from training.collab_averaging import run_fedavg, run_local_sgd
    from training.collab_dml import run_dml
    from training.dist import distributed

    with distributed(timeout_s=60) as ctx:
        if mode == "dml":
            return run_dml(cfg, ctx, train, test)
        if mode == "fedavg":
            clients = dict(enumerate(iid_clients(train, [500, 300], seed=3)))
            return run_fedavg(cfg, ctx, clients, len(clients), test)
        return run_local_sgd(cfg, ctx, train, test)


# (mode, collab settings, step at which the first attempt fails, rounds or epochs finished by then)
RESUME_CASES = [
    ("dml", {"weight": 1.0}, 25, 2),  # 10 steps an epoch, 3 epochs
    ("fedavg", {"rounds": 3, "local_epochs": 1, "mu": 0.1}, 25, 1),  # 2 clients x 10 steps a round
    ("local_sgd", {"rounds": 4, "sync_steps": 5}, 12, 2),
]


@pytest.mark.parametrize(
    ("mode", "collab", "fail_at", "finished"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES]
)
def test_resume_from_a_round_checkpoint_equals_a_straight_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    collab: dict[str, Any],
    fail_at: int,
    finished: int,
) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(LAUNCH_DIR_ENV, str(tmp_path / "launch"))
    (tmp_path / "launch").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train, test = _digits()
    base = config(mode, **collab)
    base.launch = dataclasses.replace(base.launch, num_processes=1)
    base.train = dataclasses.replace(base.train, max_steps_per_epoch=10)

    def variant(run_dir: Path, **run: Any) -> Any:
        cfg = dataclasses.replace(base)
        cfg.run = dataclasses.replace(base.run, dir=str(run_dir), checkpoint=True, **run)
        return cfg

    try:
        straight = _in_one_process(mode, variant(tmp_path / "straight"), train, test)
        stopped = variant(tmp_path / "healed")
        stopped.fault = dataclasses.replace(stopped.fault, fail_rank=0, fail_at_step=fail_at)
        with pytest.raises(InjectedFault):
            _in_one_process(mode, stopped, train, test)
        found = latest_intact(tmp_path / "healed", [])
        assert found is not None and found.record.epoch == finished
        healed = _in_one_process(mode, variant(tmp_path / "healed", resume=True), train, test)
    finally:
        torch.set_num_threads(threads)
    assert straight["state"].keys() == healed["state"].keys()
    for key, tensor in straight["state"].items():
        assert torch.equal(tensor, healed["state"][key]), key

    def timeless(result: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in result["history"]]

    assert timeless(straight) == timeless(healed)
    # The heartbeat followed the resumed run to its last step.
    beat = json.loads(heartbeat_path(tmp_path / "launch", 0).read_text())
    assert beat["step"] > fail_at
    # Every round was checkpointed; the newest run.keep_checkpoints (2) are kept.
    assert len(RunDir.at(tmp_path / "healed").step_checkpoints()) == 2
