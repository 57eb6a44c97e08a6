"""``spark-collab collab`` with GPT configs: refusals before Spark, a DiLoCo run, a failing peer named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import spark_args
from gpt_shards import char_shards, gpt_overrides

from spark_jobs.collab import main

ROOT = Path(__file__).resolve().parent.parent
DILOCO = str(ROOT / "conf" / "collab" / "gpt_diloco.toml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return char_shards(tmp_path_factory.mktemp("lm_collab_job") / "shards")


def _sets(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    """``--set`` items of a two-replica run; each replica's batch is 4 (half of gpt_overrides' 8)."""
    collab = ("launch.num_processes=2", "train.batch_size=4", "collab.inner_steps=2")
    items = gpt_overrides(shards, run_dir, *collab, *extra)
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("collab.partition='shards'",), "collab.partition = 'shards'"),
        (("collab.mode='dml'", "launch.num_processes='auto'"), "launch.num_processes"),
        (("train.strategy='fsdp'",), "train.strategy"),
    ],
)
def test_bad_input_is_one_error_line(shards: Path, tmp_path: Path, capsys, extra, message) -> None:  # type: ignore[no-untyped-def]
    assert main(["--config", DILOCO, *_sets(shards, tmp_path / "run", *extra)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.distributed
def test_diloco_run_reports_bytes(spark, shards: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    assert main(["--config", DILOCO, *_sets(shards, run_dir, "run.plots=true"), *spark_args()]) == 0
    out = capsys.readouterr().out
    assert "done: gpt diloco x2" in out and " sent " in out
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["rounds"] == 3 and result["comm_bytes"] == 3 * result["parameter_bytes"]
    assert (run_dir / "curves.png").is_file() and (run_dir / "checkpoint.pt").is_file()
    # An earlier run is refused without --overwrite.
    assert main(["--config", DILOCO, *_sets(shards, run_dir)]) == 2
    assert "holds an earlier run" in capsys.readouterr().err


@pytest.mark.distributed
def test_a_failing_peer_is_named(spark, shards: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    fault = ("fault.fail_rank=1", "fault.fail_at_step=3", "collab.mode='dml'")
    assert main(["--config", DILOCO, *_sets(shards, run_dir, *fault), *spark_args()]) == 1
    err = capsys.readouterr().err
    assert "rank 1 failed" in err and "fails at step 3" in err
    assert not (run_dir / "result.json").exists()
