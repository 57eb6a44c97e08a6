"""Configuration mistakes refused before launching, keys a job would ignore, and messages that say what fixes them."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import spark_args
from train_shards import blob_shards, blobs, write_shards

from spark_jobs import collab, shard, train, wordcount
from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.cli import build_parser as build_shard_parser
from spark_jobs.shard.cli import options_from_args as shard_options_from_args
from spark_jobs.shard.options import check_options_used as check_shard_options_used
from spark_jobs.shard.sources import TableOptions, check_arrays, load_dataframe, parse_source
from training.compat import checkpoint_mismatch
from training.config import ModelConfig
from training.models import build_model


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # 2 train shards, val and test; 16 features, 4 classes
    return blob_shards(tmp_path_factory.mktemp("pre") / "blobs16", n_train=128, shards=2)


def _other_shards(out: Path, dim: int, classes: int) -> Path:
    x, y = blobs(64, dim, classes, seed=1)
    return write_shards(out, {"test": [(x, y)]}, (dim,), classes)


def _config(tmp_path: Path, shards: Path, body: str = "") -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f"""
[model]
name = "mlp784"
[data]
shards = "{shards}"
[train]
epochs = 1
batch_size = 16
[launch]
num_processes = 1
[run]
dir = "{tmp_path / "run"}"
{body}
"""
    )
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# ------------------------------------------------------------------ data.test against data.shards


def test_train_refuses_test_shards_with_other_features(tmp_path, shards, capsys):
    other = _other_shards(tmp_path / "t8", dim=8, classes=4)
    code = train.main(["--config", str(_config(tmp_path, shards)), "--set", f"data.test={other}"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "data.test" in line and "8 values" in line and "16 values" in line
    assert not (tmp_path / "run").exists()


def test_train_refuses_test_shards_with_other_classes(tmp_path, shards, capsys):
    other = _other_shards(tmp_path / "t16x3", dim=16, classes=3)
    code = train.main(["--config", str(_config(tmp_path, shards)), "--set", f"data.test={other}"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "3 classes" in line and "has 4" in line
    assert not (tmp_path / "run").exists()


def test_collab_refuses_test_shards_with_other_features(spark, tmp_path, shards, capsys):
    other = _other_shards(tmp_path / "t8", dim=8, classes=4)
    cfg = _config(tmp_path, shards, '[collab]\nmode = "dml"')
    code = collab.main(["--config", str(cfg), "--set", f"data.test={other}", *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "data.test" in line and "8 values" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ resume against the checkpoint


def _save_checkpoint(run_dir: Path, name: str, dim: int, classes: int) -> Path:
    """A checkpoint file as the ranks write it: the plain model's state dict under "model"."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(name, (dim,), classes, ModelConfig(name=name))
    path = run_dir / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "epoch": 1, "step": 4}, path)
    return path


def test_checkpoint_mismatch_accepts_the_same_model_and_names_a_changed_one(tmp_path):
    path = _save_checkpoint(tmp_path, "mlp784", 16, 4)
    assert checkpoint_mismatch(tmp_path, ModelConfig(name="mlp784"), (16,), 4) is None
    assert checkpoint_mismatch(tmp_path / "empty", ModelConfig(name="mlp784"), (16,), 4) is None
    # mlp784 is Flatten, Linear(D, 10), ReLU, Linear(10, C): the first layer holds D, the last C.
    features = checkpoint_mismatch(tmp_path, ModelConfig(name="mlp784"), (8,), 4)
    assert (
        features is not None and "1.weight" in features and "[10, 16]" in features and "[10, 8]" in features
    )
    classes = checkpoint_mismatch(tmp_path, ModelConfig(name="mlp784"), (16,), 5)
    assert classes is not None and "3.weight" in classes and "[4, 10]" in classes
    model = checkpoint_mismatch(tmp_path, ModelConfig(name="cnn"), (16,), 4)
    assert model is not None and str(path) in model


@pytest.mark.parametrize(
    ("saved", "dim", "reason"),
    [("mlp784", 8, "shape"), ("cnn", 16, "another model")],
    ids=["data-shape-changed", "model-changed"],
)
def test_train_resume_with_a_changed_model_or_data_is_refused(
    spark, tmp_path, shards, capsys, saved, dim, reason
):
    checkpoint = _save_checkpoint(tmp_path / "run", saved, dim, 4)
    before = checkpoint.read_bytes()
    cfg = _config(tmp_path, shards, "")
    code = train.main(["--config", str(cfg), "--set", "run.resume=true", *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: run.resume=true") and reason in line
    assert [p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")] == ["checkpoint.pt"]
    assert checkpoint.read_bytes() == before


def test_train_refuses_a_model_that_cannot_take_the_data(spark, tmp_path, shards, capsys):
    # The CNN reads flat features as a square image: 12 values are not one.
    twelve = write_shards(
        tmp_path / "d12", {"train": [blobs(32, 12, 4)], "test": [blobs(16, 12, 4)]}, (12,), 4
    )
    cfg = _config(tmp_path, twelve, "")
    code = train.main(["--config", str(cfg), "--set", "model.name=cnn", *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "model.name='cnn'" in line and "square" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ keys a job would ignore


@pytest.mark.parametrize(
    "setting",
    ["train.strategy=fsdp", "train.bf16=true", "run.plots=false", "data.val_split=dev"],
)
def test_collab_refuses_keys_it_does_not_read(spark, tmp_path, shards, capsys, setting):
    cfg = _config(tmp_path, shards, '[collab]\nmode = "dml"')
    code = collab.main(["--config", str(cfg), "--set", setting, *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {setting.split('=')[0]}=") and "does not use" in line
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_collab_section(spark, tmp_path, shards, capsys):
    cfg = _config(tmp_path, shards, '[collab]\nmode = "dml"')
    code = train.main(["--config", str(cfg), *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "[collab]" in line and "spark-collab collab" in line


def _shard_args(*argv: str) -> argparse.Namespace:
    return build_shard_parser().parse_args(["--output", "x", *argv])


def _check_shard_options(args: argparse.Namespace, num_classes: int | None = 10) -> None:
    check_shard_options_used(shard_options_from_args(args), num_classes)


def test_shard_refuses_options_that_would_do_nothing(capsys):
    for argv, flag in (
        (["--split", "test=1", "--shards", "3"], "--shards 3"),
        (["--split", "test=1", "--partition", "dirichlet:0.5"], "--partition dirichlet:0.5"),
        (["--split", "train=0.5,test=0.5", "--partition-splits", "val"], "--partition-splits val"),
        (["--partition", "pathological:11"], "--partition pathological:11"),
    ):
        with pytest.raises(JobInputError, match=flag):
            _check_shard_options(_shard_args(*argv))
    # Defaults stay valid: a test-only split with the default --shards, K equal to the classes.
    _check_shard_options(_shard_args("--split", "test=1"))
    _check_shard_options(_shard_args("--partition", "pathological:10"))
    _check_shard_options(_shard_args("--partition", "pathological:11"), num_classes=None)  # known later
    # The job itself refuses before Spark starts (digits has 10 classes).
    assert shard.main(["--source", "digits", "--output", "unused", "--partition", "pathological:11"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "must be <= the number of classes (10)" in line
    assert shard.main(["--source", "digits", "--output", "unused", "--split", "test=1", "--shards", "3"]) == 2
    assert "--shards 3" in _one_error_line(capsys.readouterr().err)
    assert not Path("unused").exists()


# ------------------------------------------------------------------ messages that say what fixes it


def test_no_train_shards_says_to_reshard_not_to_change_processes(tmp_path, capsys):
    test_only = write_shards(tmp_path / "test-only", {"test": [blobs(32, 16, 4)]}, (16,), 4)
    code = train.main(["--config", str(_config(tmp_path, test_only))])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "no 'train' rows" in line and "--split train=" in line
    assert "num_processes" not in line


def test_too_few_train_shards_message_counts_in_the_singular(tmp_path, capsys):
    one = write_shards(tmp_path / "one", {"train": [blobs(32, 16, 4)]}, (16,), 4)
    code = train.main(["--config", str(_config(tmp_path, one)), "--set", "launch.num_processes=2"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "has 1 shard in 'train'" in line and "--set launch.num_processes=1" in line


def test_negative_label_names_the_row_and_the_rule() -> None:
    features = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(JobInputError, match=r"label -1 in row 2: labels must be >= 0") as err:
        check_arrays(features, np.array([0, 1, -1]), 10, "--source x")
    assert "--num-classes" not in str(err.value)
    with pytest.raises(JobInputError, match=r"label 12 in row 1 is out of range 0..9; pass --num-classes 13"):
        check_arrays(features, np.array([0, 12, 1]), 10, "--source x")


@pytest.mark.parametrize(
    ("option", "value"), [("--top", "-1"), ("--min-count", "0")], ids=["top", "min-count"]
)
def test_wordcount_names_the_option_that_is_out_of_range(tmp_path, capsys, option, value):
    code = wordcount.main(["README.md", "--output", str(tmp_path / "out"), option, value])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {option} {value}:")
    other = {"--top", "--min-count"} - {option}
    assert other.pop() not in line


@pytest.mark.parametrize(("row", "fields"), [("7,8,1,9", 4), ("7,1", 2)], ids=["extra-column", "short-row"])
def test_csv_rows_with_another_number_of_fields_are_reported_by_line(spark, tmp_path, row, fields):
    path = tmp_path / "t.csv"
    path.write_text(f"a,b,label\n1,2,0\n4,5,1\n{row}\n3,3,0\n")
    with pytest.raises(JobInputError) as err:
        load_dataframe(spark, parse_source(f"csv:{path}"), TableOptions())
    message = str(err.value)
    assert f"line 4 of {path} has {fields} fields, the header has 3" in message
    assert "1 such line in all" in message


def test_csv_with_consistent_rows_still_loads(spark, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n4,5,1\n")
    df, classes, shape = load_dataframe(spark, parse_source(f"csv:{path}"), TableOptions())
    assert sorted((r["id"], r["label"], list(r["features"])) for r in df.collect()) == [
        (0, 0, [1.0, 2.0]),
        (1, 1, [4.0, 5.0]),
    ]
    assert classes == 2 and shape == (2,)
    df.unpersist()


@pytest.mark.distributed
def test_collab_honours_fault_injection_and_torchrun_stays_quiet(spark, tmp_path, shards, capfd):
    cfg = _config(tmp_path, shards, '[collab]\nmode = "dml"\nrounds = 1')
    code = collab.main(
        [
            "--config", str(cfg), "--set", "launch.num_processes=2", "--set", "launch.timeout_s=240",
            "--set", "fault.fail_rank=1", "--set", "fault.fail_at_step=1", *spark_args(),
        ]
    )  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 1, err
    assert "rank 1" in err and "fault injection" in err
    assert not (tmp_path / "run" / "result.json").exists()
    # Two ranks on one node: torchrun would announce the OMP_NUM_THREADS it picks for them.
    assert "OMP_NUM_THREADS" not in out + err


def test_train_refuses_a_collab_section_in_a_gpt_config(spark, tmp_path, capsys):
    from gpt_shards import char_shards, gpt_overrides

    tokens = char_shards(tmp_path / "tokens")
    cfg = tmp_path / "gpt.toml"
    cfg.write_text('[collab]\nmode = "diloco"\n')
    sets = [f"--set={item}" for item in gpt_overrides(tokens, tmp_path / "run")]
    code = train.main(["--config", str(cfg), *sets, *spark_args()])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "[collab]" in line and "spark-collab collab" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("job", ["train", "collab"])
def test_a_warm_start_from_an_unfit_run_is_refused(spark, tmp_path, capsys, job):
    from gpt_shards import char_shards, gpt_overrides

    from training.config import load_config
    from training.dist import distributed
    from training.lm_loop import run_training

    tokens = char_shards(tmp_path / "tokens")
    with distributed() as ctx:  # an earlier run one layer deeper than the new one
        run_training(load_config(None, gpt_overrides(tokens, tmp_path / "deep", "model.n_layer=3")), ctx)
    main = train.main if job == "train" else collab.main
    extra = [] if job == "train" else ["collab.mode='diloco'"]
    for init_from, named in (
        (tmp_path / "deep", "model.n_layer is 3"),
        (tmp_path / "nothing", "no checkpoint.pt"),
    ):
        sets = [
            f"--set={item}"
            for item in gpt_overrides(tokens, tmp_path / "run", *extra, f"train.init_from='{init_from}'")
        ]
        code = main([*sets, *spark_args()])
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and "train.init_from" in line and named in line, line
        assert not (tmp_path / "run").exists()
