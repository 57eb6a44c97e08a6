"""``launch.num_processes = "auto"`` and the GPU pre-check, against the test session (local[2])."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import spark_args
from restart_runs import sets
from train_shards import blob_shards

from spark_jobs.common.errors import JobInputError
from spark_jobs.launch.resources import check_gpus_offered, offered_processes
from training.config import load_config


def cores_in(master: str) -> int:
    """N of a ``local[N]`` master, read from the URL itself."""
    match = re.fullmatch(r"local\[(\d+)\]", master)
    assert match, master
    return int(match.group(1))


def test_auto_takes_the_cores_of_the_local_master(spark) -> None:  # type: ignore[no-untyped-def]
    n = cores_in(spark.sparkContext.master)
    assert offered_processes(spark, local_mode=True, use_gpu=False) == n
    # Distributed mode: one barrier task per rank, as many as the executors can run at once.
    assert offered_processes(spark, local_mode=False, use_gpu=False) == n


def test_gpus_asked_for_and_not_offered_name_the_spark_settings(spark) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobInputError, match=r"spark\.driver\.resource\.gpu\.amount") as local:
        check_gpus_offered(spark, local_mode=True)
    with pytest.raises(JobInputError, match=r"spark\.task\.resource\.gpu\.amount") as cluster:
        offered_processes(spark, local_mode=False, use_gpu=True)
    for info in (local, cluster):
        assert "\n" not in str(info.value) and "launch.use_gpu" in str(info.value)


def test_auto_is_a_typed_choice_of_the_config() -> None:
    assert load_config(None, ["launch.num_processes=auto", "data.shards=x"]).launch.num_processes == "auto"
    assert load_config(None, ["launch.num_processes=4", "data.shards=x"]).launch.num_processes == 4
    with pytest.raises(ValueError, match=r'launch\.num_processes: expected a number >= 1 or "auto"'):
        load_config(None, ["launch.num_processes=four", "data.shards=x"])
    with pytest.raises(ValueError, match=r"launch\.num_processes: expected int or str, got 1\.5"):
        load_config(None, ["launch.num_processes=1.5", "data.shards=x"])


@pytest.mark.distributed
def test_train_with_auto_runs_on_what_spark_offers(  # type: ignore[no-untyped-def]
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    shards = blob_shards(tmp_path / "shards", n_train=256, shards=2)
    run = tmp_path / "run"
    argv = sets(shards, run, "launch.num_processes=auto", "train.epochs=1")
    assert main(spark_args(*argv)) == 0
    n = cores_in(spark.sparkContext.master)
    assert f"launch.num_processes=auto: {n} ranks" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert result["world_size"] == n and result["config"]["launch"]["num_processes"] == n
