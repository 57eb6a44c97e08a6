"""Training run directories are staged like every other output (spark_jobs/launch/staged_run.py).

No Spark and no torch: the ranks are played by writing files into the staging directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.atomic import final_path, staging_sibling
from contracts.checkpoints import CheckpointRecord, sha256_of, write_record
from contracts.rundir import RunDir
from spark_jobs.common.errors import JobInputError
from spark_jobs.launch.staged_run import check_run_dir, staged_run_dir


def _write_checkpoint(run_dir: Path, step: int) -> None:
    """What a rank writes at a checkpoint: the bytes, their record, checkpoint.pt, a metrics line."""
    run = RunDir.at(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    data = f"state at {step}".encode()
    path = run.step_checkpoint(step)
    path.write_bytes(data)
    write_record(path, CheckpointRecord(step=step, epoch=1, bytes=len(data), sha256=sha256_of(data)))
    run.checkpoint.unlink(missing_ok=True)
    run.checkpoint.hardlink_to(path)
    with run.metrics.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step}) + "\n")


def _finish(staging: Path) -> None:
    result = {"run_dir": str(staging), "config": {"run": {"dir": str(staging)}}, "loss": 0.5}
    RunDir.at(staging).result.write_text(json.dumps(result), encoding="utf-8")


def test_final_path_undoes_staging_sibling_only() -> None:
    target = Path("/runs/train/mlp")
    staging = staging_sibling(target)
    assert staging.parent == target.parent and staging.name.startswith(".mlp.staging-")
    assert final_path(staging) == target
    for plain in (target, Path("/runs/.hidden"), Path("/runs/.x.staging-short")):
        assert final_path(plain) == plain


def test_check_run_dir_takes_fresh_and_empty_directories(tmp_path: Path) -> None:
    assert check_run_dir(tmp_path / "new", overwrite=False, resume=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_run_dir(tmp_path / "empty", overwrite=False, resume=False) == tmp_path / "empty"


def test_check_run_dir_refuses_what_it_would_lose(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    RunDir.at(run).result.write_text("{}")
    with pytest.raises(JobInputError, match=r"holds an earlier run \(result.json\); pass --overwrite"):
        check_run_dir(run, overwrite=False, resume=False)
    check_run_dir(run, overwrite=True, resume=False)
    check_run_dir(run, overwrite=False, resume=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(JobInputError, match=r"holds files that are not a run's \(notes.txt\)"):
        check_run_dir(run, overwrite=True, resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(JobInputError, match="exists and is not a directory"):
        check_run_dir(tmp_path / "file", overwrite=True, resume=False)


def test_a_finished_run_replaces_run_dir_and_names_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with staged_run_dir(run, overwrite=False, resume=False) as staging:
        _write_checkpoint(staging, 4)
        assert not run.exists()  # nothing at run.dir while the ranks work
        _finish(staging)
    result = json.loads(RunDir.at(run).result.read_text(encoding="utf-8"))
    assert result["run_dir"] == str(run) and result["config"]["run"]["dir"] == str(run)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory, no lock file


def test_overwrite_keeps_the_earlier_run_until_the_new_one_finished(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    RunDir.at(run).result.write_text('{"loss": 1.0}')
    with (
        pytest.raises(RuntimeError, match="rank failed"),
        staged_run_dir(run, overwrite=True, resume=False) as staging,
    ):
        _write_checkpoint(staging, 4)
        raise RuntimeError("rank failed")
    # The failed new run kept nothing: the earlier, finished run is untouched.
    assert sorted(p.name for p in run.iterdir()) == ["result.json"]
    assert RunDir.at(run).result.read_text() == '{"loss": 1.0}'


def test_a_failed_run_keeps_its_resume_point_and_a_resumed_run_continues_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), staged_run_dir(run, overwrite=False, resume=False) as staging:
        _write_checkpoint(staging, 4)
        _write_checkpoint(staging, 8)
        raise KeyboardInterrupt
    assert "checkpoints up to step 8 kept in" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "checkpoints", "metrics.jsonl"]
    assert RunDir.at(run).checkpoint.samefile(RunDir.at(run).step_checkpoint(8))
    with staged_run_dir(run, overwrite=False, resume=True) as staging:
        # The resumed run starts from the kept checkpoints and metrics; run.dir stays as it was.
        assert RunDir.at(staging).step_checkpoint(8).read_bytes() == b"state at 8"
        _write_checkpoint(staging, 12)
        assert len(RunDir.at(run).metrics.read_text().splitlines()) == 2
        _finish(staging)
    lines = [json.loads(x)["step"] for x in RunDir.at(run).metrics.read_text().splitlines()]
    assert lines == [4, 8, 12]
    assert RunDir.at(run).result.is_file()
