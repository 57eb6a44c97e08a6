"""A collaborative run restarts too: it keeps no checkpoints, so a restart reruns it from the start,
and the result equals that of a run that never failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import spark_args
from train_shards import blob_shards

pytestmark = pytest.mark.distributed

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


def test_a_killed_collab_rank_reruns_to_the_same_result(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.collab import main

    shards = blob_shards(tmp_path / "shards", n_train=256, shards=2)
    runs = {}
    for name, extra in (
        ("plain", []),
        ("healed", ["fault.fail_rank=1", "fault.fail_at_step=5", "fault.mode=kill"]),
    ):
        config = tmp_path / f"{name}.toml"
        config.write_text(FEDAVG.format(shards=shards, run=tmp_path / name))
        sets = [x for item in [*extra, "launch.max_restarts=1"] for x in ("--set", item)]
        assert main(["--config", str(config), *sets, *spark_args()]) == 0
        runs[name] = json.loads((tmp_path / name / "result.json").read_text())
    (restart,) = runs["healed"]["restarts"]
    assert (restart["rank"], restart["kind"], restart["resume_step"]) == (1, "killed", None)
    assert "restarts" not in runs["plain"]
    timeless = [[{k: v for k, v in r.items() if k != "elapsed_s"} for r in runs[n]["history"]] for n in runs]
    assert timeless[0] == timeless[1] and len(timeless[0]) == 2
