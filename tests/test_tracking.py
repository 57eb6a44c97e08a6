"""MLflow tracking (``run.tracking = "mlflow"``): a real local file store, read back with the client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_shards import blob_shards

from training import tracking
from training.checkpoint import load_model_state
from training.config import load_config
from training.data import load_shard
from training.faults import InjectedFault
from training.loop import train
from training.models import build_model

mlflow = pytest.importorskip("mlflow")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=128, shards=2)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default store: no MLFLOW_TRACKING_URI, ``mlruns/`` in a fresh working directory."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "mlruns"


def cfg_for(shards: Path, run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"data.shards='{shards}'",
            f"run.dir='{run_dir}'",
            "launch.num_processes=1",
            "train.batch_size=32",
            "train.epochs=3",
            "optim.lr=0.05",
            *extra,
        ],
    )


def only_run(store: Path):  # type: ignore[no-untyped-def]
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_metric_records_become_numbers() -> None:
    rec = {"epoch": 2, "loss": 0.5, "val": None, "ok": True, "acc": [0.1, 0.2], "sub": {"n": 3}, "s": "x"}
    assert tracking.numeric_metrics(rec) == {
        "epoch": 2.0,
        "loss": 0.5,
        "acc.0": 0.1,
        "acc.1": 0.2,
        "sub.n": 3.0,
    }
    assert tracking.flatten({"optim": {"lr": 0.1}, "run": {"dir": "d"}}) == {"optim.lr": 0.1, "run.dir": "d"}


def test_unknown_tracker_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"run\.tracking"):
        load_config(None, ["run.tracking=wandb"])


def test_off_by_default_leaves_no_store(shards: Path, tmp_path: Path, store: Path) -> None:
    train(cfg_for(shards, tmp_path / "run", "run.plots=false"))
    assert not store.exists() and not tracking.active()


def test_train_run_is_read_back(shards: Path, tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    train(cfg_for(shards, run_dir, "run.tracking=mlflow"))
    assert store.is_dir() and not tracking.active()
    client, run = only_run(store)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["train.epochs"] == "3"
    assert run.data.params["run.tracking"] == "mlflow"
    on_disk = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in on_disk])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "metrics.jsonl", "curves.png"} <= names

    # The logged model predicts what the checkpoint's weights in a plain module predict.
    data = load_shard(shards, "test")
    reference = build_model("mlp784", data.feature_shape, data.num_classes)
    reference.load_state_dict(load_model_state(run_dir / "checkpoint.pt"))
    with torch.no_grad():
        want = reference(data.features).numpy()
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    got = loaded.predict(data.features.numpy())
    assert got.shape == want.shape
    assert got == pytest.approx(want, abs=1e-5)


def test_a_failing_run_ends_failed(shards: Path, tmp_path: Path, store: Path) -> None:
    cfg = cfg_for(
        shards, tmp_path / "run", "run.tracking=mlflow", "fault.fail_rank=0", "fault.fail_at_step=5"
    )
    with pytest.raises(InjectedFault):
        train(cfg)
    _, run = only_run(store)
    assert run.info.status == "FAILED" and not tracking.active()
    assert (
        len(mlflow.tracking.MlflowClient(store.as_uri()).get_metric_history(run.info.run_id, "train_loss"))
        == 1
    )


def test_tracking_uri_is_respected(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.chdir(tmp_path)
    train(cfg_for(shards, tmp_path / "run", "run.tracking=mlflow", "run.checkpoint=false", "run.plots=false"))
    assert not (tmp_path / "mlruns").exists()
    _, run = only_run(elsewhere)
    assert {"train_loss", "val_accuracy"} <= run.data.metrics.keys()


@pytest.mark.distributed
def test_collab_run_is_logged_by_the_driver(spark, shards: Path, tmp_path: Path, store: Path) -> None:
    from conftest import spark_args

    from spark_jobs.collab import main

    config = tmp_path / "dml.toml"
    config.write_text(
        f"""
[model]
name = "mlp784"
[data]
shards = "{shards}"
[optim]
lr = 0.05
decay = 0.0
[train]
epochs = 2
batch_size = 32
[launch]
num_processes = 2
timeout_s = 240
[run]
dir = "{tmp_path / "dml"}"
tracking = "mlflow"
[collab]
mode = "dml"
"""
    )
    assert main(["--config", str(config), *spark_args()]) == 0
    on_disk = [json.loads(line) for line in (tmp_path / "dml" / "metrics.jsonl").read_text().splitlines()]
    client, run = only_run(store)
    assert run.info.status == "FINISHED" and run.data.tags["spark_collab.kind"] == "collab"
    assert run.data.params["collab.mode"] == "dml"
    history = client.get_metric_history(run.info.run_id, "ensemble_acc")
    assert [m.step for m in history] == [r["epoch"] for r in on_disk] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["ensemble_acc"] for r in on_disk])
    peer_1 = client.get_metric_history(run.info.run_id, "peer_acc.1")
    assert [m.value for m in peer_1] == pytest.approx([r["peer_acc"][1] for r in on_disk])
    assert {"result.json", "metrics.jsonl", "accuracy.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }


@pytest.mark.distributed
def test_two_rank_train_job_logs_one_run(
    spark, shards: Path, tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import spark_args

    from spark_jobs.train import main

    run_dir = tmp_path / "ddp"
    overrides = [f"data.shards={shards}", f"run.dir={run_dir}", "train.epochs=2", "train.batch_size=32"]
    overrides += ["run.tracking=mlflow", "run.plots=false"]
    assert main([arg for item in overrides for arg in ("--set", item)] + spark_args()) == 0
    # The ranks opted in to the file store in their own processes; a reader here does the same.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client, run = only_run(store)  # rank 1 logged nothing
    assert run.data.params["launch.num_processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]


def test_gpt_run_is_read_back(tmp_path: Path, store: Path) -> None:
    from gpt_shards import char_shards, gpt_overrides

    from training import lm_loop

    shards = char_shards(tmp_path / "tokens")
    run_dir = tmp_path / "gpt"
    lm_loop.train(load_config(None, gpt_overrides(shards, run_dir, "run.tracking=mlflow")))
    assert not tracking.active()
    client, run = only_run(store)
    assert run.info.status == "FINISHED" and run.data.params["model.n_embd"] == "32"
    on_disk = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in on_disk if "val_loss" in r]
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert val and [m.step for m in history] == [r["iter"] for r in val]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in val])
    assert "result.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
