"""``spark-collab collab``: input checks before Spark, and one real TorchDistributor launch per mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import spark_args
from train_shards import blob_shards

from spark_jobs.collab import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # 4 training shards (clients), a val and a test split; 16-dim separable blobs, 4 classes.
    return blob_shards(tmp_path_factory.mktemp("collab") / "blobs", n_train=512, shards=4)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def _cfg(tmp_path: Path, shards: Path, collab: str, extra: str = "") -> Path:
    return _write(
        tmp_path,
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
dir = "{tmp_path / "run"}"
[collab]
{collab}
{extra}
""",
    )


def test_average_fusion_across_different_inits_refused_before_spark(tmp_path, shards, capsys):
    cfg = _cfg(tmp_path, shards, 'mode = "dml"\nfusion = "average"')
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: collab.fusion = 'average' refused") and "different initialisations" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()
    cfg = _cfg(
        tmp_path, shards, 'mode = "dml"\nfusion = "average"\npeers = ["mlp784", "mlp"]\nsame_init = true'
    )
    assert main(["--config", str(cfg)]) == 2
    assert "different architectures" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("collab", "overrides", "message"),
    [
        (
            'mode = "fedavg"',
            ["--set", "launch.num_processes=8", "--set", "train.batch_size=32"],
            "re-shard with --shards 8",
        ),
        ('mode = "dml"', ["--set", "data.test_split=holdout"], "no 'holdout' split"),
        ('mode = "dml"', ["--set", "collab.weight=-1"], "collab.weight"),
        ('mode = "gossip"', [], "collab.mode"),
        ('mode = "local_sgd"', ["--set", "collab.sync_steps=-1"], "collab.sync_steps"),
        ('mode = "dml"\npeers = ["mlp", "mlp", "cnn"]', [], "one peer per rank"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, shards, capsys, collab, overrides, message):
    cfg = _cfg(tmp_path, shards, collab)
    assert main(["--config", str(cfg), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_batch_size_is_per_peer_not_a_multiple_of_the_ranks(tmp_path, shards):
    from spark_jobs.collab.job import _load

    cfg = _load(
        str(_cfg(tmp_path, shards, 'mode = "dml"')),
        ["launch.num_processes=3", "train.batch_size=32"],  # 32 is not a multiple of 3: fine per peer
    )
    assert cfg.train.batch_size == 32 and cfg.launch.num_processes == 3


def test_config_without_collab_section_is_refused(tmp_path, shards, capsys):
    cfg = _write(tmp_path, f'[data]\nshards = "{shards}"\n')
    assert main(["--config", str(cfg)]) == 2
    assert "no [collab] section" in capsys.readouterr().err


def test_shipped_configs_parse():
    from training.config import load_config

    root = Path(__file__).resolve().parent.parent / "conf" / "collab"
    modes = {load_config(p).collab.mode for p in sorted(root.glob("*.toml"))}
    assert {"dml", "fedavg", "local_sgd"} <= modes


@pytest.mark.distributed
def test_dml_with_heterogeneous_peers_through_torchdistributor(spark, tmp_path, shards):
    cfg = _cfg(
        tmp_path, shards, 'mode = "dml"\npeers = ["mlp784", "mlp"]\nweight = 1.0\ntarget_accuracy = 0.5'
    )
    assert main(["--config", str(cfg), "--set", "model.hidden=32", *spark_args()]) == 0
    run = tmp_path / "run"
    result = json.loads((run / "result.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["world_size"] == 2 and result["peers"] == ["mlp784", "mlp"]
    assert [m["epoch"] for m in metrics] == [1, 2]
    final = result["final"]
    assert len(final["peer_acc"]) == 2 and final["fusion"] == "ensemble"
    # The fused accuracy against a single-process reference: the peers saved in peers.pt, fused
    # by the inference code's ensemble (mean of probabilities), on the same test split.
    reference = _ensemble_accuracy(run, shards)
    assert abs(final["fused_acc"] - reference) <= 1e-9, (final["fused_acc"], reference)
    assert 0.0 <= final["disagreement"] <= 1.0 and final["pairwise_kl"] >= 0.0
    assert result["config"]["collab"]["peers"] == ["mlp784", "mlp"]
    for png in ("accuracy.png", "agreement.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # An existing run.dir is refused without --overwrite.
    assert main(["--config", str(cfg), *spark_args()]) == 2


@pytest.mark.distributed
def test_fedprox_with_client_sampling_through_torchdistributor(spark, tmp_path, shards):
    collab = 'mode = "fedavg"\nrounds = 3\nlocal_epochs = 1\nfraction = 0.5\nmu = 0.01\ntarget_accuracy = 0.6'
    cfg = _cfg(tmp_path, shards, collab)
    assert main(["--config", str(cfg), *spark_args()]) == 0
    run = tmp_path / "run"
    result = json.loads((run / "result.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    for m in metrics:  # 4 clients, C = 0.5: two distinct clients a round
        assert len(m["clients"]) == 2 == len(set(m["clients"])) == len(m["client_acc"])
        assert set(m["clients"]) <= {0, 1, 2, 3}
    reached = [m["round"] for m in metrics if m["global_acc"] >= 0.6]
    assert result["round_to_target"] == (reached[0] if reached else None)
    assert metrics[-1]["global_acc"] > 0.5
    assert (run / "accuracy.png").exists() and (run / "launch" / "rank-1.ok").exists()


def test_compare_arms_are_paired(tmp_path):
    from spark_jobs.collab.job import compare_configs
    from training.config import load_config

    base = load_config(Path(__file__).resolve().parent.parent / "conf" / "collab" / "compare.toml")
    shards = {"iid": "/s/iid", "pathological": "/s/p", "dirichlet0.1": "/s/d"}
    multi, single = compare_configs(base, shards, seeds=3)
    assert list(multi) == [
        "independent",
        "dml(weight=1)",
        "fedavg-iid",
        "fedavg-pathological",
        "fedavg-dirichlet0.1",
    ]
    for seed in range(3):
        ind, dml = multi["independent"][seed], multi["dml(weight=1)"][seed]
        assert ind.train.seed == dml.train.seed == seed
        assert ind.collab.weight == 0.0 and dml.collab.weight == 1.0
        assert ind.data.shards == dml.data.shards == "/s/iid"
        assert (ind.model, ind.optim, ind.train) == (dml.model, dml.optim, dml.train)
        fed = [multi[f"fedavg-{p}"][seed] for p in shards]
        assert [f.data.shards for f in fed] == ["/s/iid", "/s/p", "/s/d"]
        assert all(f.collab.mode == "fedavg" and f.train.seed == seed for f in fed)
        central = single["centralized"][seed]
        assert central.launch.num_processes == 1 and central.collab.mode == "dml"
        assert central.train.epochs == base.collab.rounds * base.collab.local_epochs
    assert base.launch.num_processes == 2  # the shared config object is not mutated by the arms


def _ensemble_accuracy(run: Path, shards: Path) -> float:
    import numpy as np

    from training.data import load_shard
    from training.inference import load_classifier, probabilities_by_id

    test = load_shard(shards, "test", None)
    classifier = load_classifier(run, "ensemble")
    probs = probabilities_by_id(classifier, test.features, np.arange(len(test.labels)), 64)
    return float((probs.argmax(dim=1).numpy() == np.asarray(test.labels)).mean())
