"""Step checkpoints in one process: mid-epoch resume is exact, a damaged latest one falls back, the
last K are kept, a refused write names the run directory and loses nothing earlier.

The reference is always an uninterrupted run of the same config (compared bitwise, on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_shards import blob_shards

from contracts.checkpoints import latest_intact, problem_with
from contracts.rundir import RunDir
from training import checkpoint as checkpoint_module
from training.checkpoint import CheckpointWriteError, load_model_state
from training.config import load_config
from training.faults import InjectedFault
from training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=256, shards=2)


def cfg_for(shards: Path, run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"data.shards='{shards}'",
            f"run.dir='{run_dir}'",
            "launch.num_processes=1",
            "train.batch_size=32",  # 8 steps per epoch
            "train.epochs=3",
            "optim.decay=0.01",
            "run.plots=false",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def straight(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(cfg_for(shards, run))
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = load_model_state(a / "checkpoint.pt"), load_model_state(b / "checkpoint.pt")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for ra, rb in zip(metrics(a), metrics(b), strict=True):
        for key in ("epoch", "step", "train_loss", "train_accuracy", "val_accuracy", "lr"):
            assert ra[key] == rb[key], (key, ra, rb)


def test_resume_from_the_middle_of_an_epoch_is_exact(shards: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    every = ["run.checkpoint_every=3", "run.keep_checkpoints=10"]
    with pytest.raises(InjectedFault):
        train(cfg_for(shards, run, *every, "fault.fail_rank=0", "fault.fail_at_step=13"))
    # Steps 3, 6 (epoch 1), 8 (epoch end), 9, 12 (epoch 2) were checkpointed; 13 failed.
    steps = sorted(int(p.stem.split("-")[1]) for p in RunDir.at(run).step_checkpoints())
    assert steps == [3, 6, 8, 9, 12]
    result = train(cfg_for(shards, run, *every, "run.resume=true"))
    assert result["resumed_from_epoch"] == 1 and result["steps"] == 24
    assert_same_run(straight, run)


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(
    shards: Path, straight: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(InjectedFault):
        train(cfg_for(shards, run, "run.checkpoint_every=5", "fault.fail_rank=0", "fault.fail_at_step=17"))
    latest, before = RunDir.at(run).step_checkpoints()[:2]
    assert (latest.name, before.name) == ("step-000000016.pt", "step-000000015.pt")
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # as a crash or a bad copy would leave it
    assert "truncated" in (problem_with(latest) or "")
    capfd.readouterr()
    train(cfg_for(shards, run, "run.checkpoint_every=5", "run.resume=true"))
    err = capfd.readouterr().err
    assert f"checkpoint {latest} is not usable" in err and "step-000000015.pt (step 15)" in err
    assert_same_run(straight, run)


def test_a_checkpoint_without_its_record_is_incomplete(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(shards, run, "train.epochs=2", "run.keep_checkpoints=2"))
    newest = RunDir.at(run).step_checkpoints()[0]
    RunDir.checkpoint_record(newest).unlink()  # the writer died between the bytes and the record
    warnings: list[str] = []
    found = latest_intact(run, warnings)
    assert found is not None and found.record.step == 8 and "did not finish" in warnings[0]


def test_only_the_last_k_checkpoints_are_kept(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(shards, run, "run.checkpoint_every=2", "run.keep_checkpoints=3"))
    names = sorted(p.name for p in RunDir.at(run).checkpoints.iterdir())
    assert names == [f"step-0000000{s}.{ext}" for s in (20, 22, 24) for ext in ("json", "pt")]
    # checkpoint.pt is the newest one (a link, not a second copy).
    assert (run / "checkpoint.pt").samefile(RunDir.at(run).step_checkpoint(24))


def test_a_refused_write_names_the_run_dir_and_keeps_the_earlier_checkpoints(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train(cfg_for(shards, run, "train.epochs=1"))
    before = {p.name: p.read_bytes() for p in RunDir.at(run).checkpoints.iterdir()}
    real_write = checkpoint_module.write_bytes_atomic

    def full_disk(path, data, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).suffix == ".pt":
            raise OSError(28, "No space left on device")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(checkpoint_module, "write_bytes_atomic", full_disk)
    with pytest.raises(
        CheckpointWriteError, match=r"run\.dir .*No space left on device.*earlier checkpoints"
    ):
        train(cfg_for(shards, run, "train.epochs=2", "run.resume=true"))
    after = {p.name: p.read_bytes() for p in RunDir.at(run).checkpoints.iterdir()}
    assert after == before
