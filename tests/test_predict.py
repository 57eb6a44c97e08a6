"""``spark-collab predict``: predictions against a single-process torch reference, fusion, loads, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import spark_args
from train_shards import write_shards

from spark_jobs.predict import PredictOptions, main, predict
from training.checkpoint import load_model_state
from training.config import load_config
from training.fusion import init_fingerprint
from training.inference import peer_models_document
from training.models import build_model

SHAPE = (8, 8)
CLASSES = 4
ROWS = 512  # a multiple of BATCH: the reference loop's batches are all full
BATCH = 64


def digit_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable 8x8 'images': class k lights up row 2k (a CNN and an MLP both learn it)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    x = rng.normal(0.0, 0.5, size=(n, 8, 8)).astype(np.float32)
    x[np.arange(n), 2 * y, :] += 2.0
    return x.reshape(n, 64), y


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Only a test split, ids 0..ROWS-1 in two shards; then a train split for the training fixture.
    out = tmp_path_factory.mktemp("predict") / "shards"
    x, y = digit_like(ROWS, seed=1)
    xt, yt = digit_like(256, seed=2)
    half = ROWS // 2
    return write_shards(
        out, {"test": [(x[:half], y[:half]), (x[half:], y[half:])], "train": [(xt, yt)]}, SHAPE, CLASSES
    )


@pytest.fixture(scope="module")
def train_run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real train run (world size 1, in process): result.json and checkpoint.pt as the job writes them."""
    from training.loop import train

    run = tmp_path_factory.mktemp("predict") / "cnn-run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(
            None,
            [
                "model.name='cnn'",
                f"data.shards='{shards}'",
                "data.test_split='test'",
                f"run.dir='{run}'",
                "launch.num_processes=1",
                "train.batch_size=32",
                "train.epochs=1",
                "run.plots=false",
            ],
        )
        train(cfg)
    finally:
        torch.set_num_threads(before)
    return run


def peer_run(root: Path, shards: Path, seeds: tuple[int, ...]) -> Path:
    """A collab run directory as the collab job leaves it: result.json and peers.pt."""
    states, fingerprints = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        state = build_model("mlp", SHAPE, CLASSES, load_config(None, ["model.hidden=16"]).model).state_dict()
        fingerprints.append(init_fingerprint(state))
        # Different "training" per peer, so that the peers predict differently from their init.
        states.append({k: v + 0.05 * (i + 1) * torch.randn_like(v) for i, (k, v) in enumerate(state.items())})
    root.mkdir(parents=True)
    cfg = load_config(
        None, ["model.name='mlp'", "model.hidden=16", f"data.shards='{shards}'", "collab.mode='dml'"]
    )
    doc = {"mode": "dml", "peers": ["mlp"] * len(seeds), "config": cfg.to_dict(), "history": []}
    (root / "result.json").write_text(json.dumps(doc))
    torch.save(
        peer_models_document(states, ["mlp"] * len(seeds), fingerprints, SHAPE, CLASSES), root / "peers.pt"
    )
    return root


def split_features(shards: Path) -> tuple[torch.Tensor, np.ndarray]:
    tables = [pq.read_table(p) for p in sorted((shards / "test").rglob("*.parquet"))]
    table = pa.concat_tables(tables).sort_by("id")
    x = torch.tensor(np.stack(table.column("features").to_numpy(zero_copy_only=False)), dtype=torch.float32)
    return x, table.column("label").to_numpy()


def reference_probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The single-process torch loop: rows in id order, batches of BATCH, softmax of the logits."""
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x[i : i + BATCH]), dim=1) for i in range(0, len(x), BATCH)])


def read_predictions(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list]:
    table = pq.read_table(out / "predictions").sort_by("id")
    labels = table.column("label").to_numpy() if "label" in table.column_names else None
    return (
        table.column("id").to_numpy(),
        table.column("prediction").to_numpy(),
        labels,
        table.column("probabilities").to_pylist(),
    )


def test_train_run_matches_the_torch_reference_bit_for_bit_at_any_partitioning(
    spark, shards: Path, train_run: Path, tmp_path: Path
) -> None:
    x, labels = split_features(shards)
    model = build_model("cnn", SHAPE, CLASSES)
    model.load_state_dict(load_model_state(train_run / "checkpoint.pt"))
    ref = reference_probs(model, x)
    for partitions in (1, 3, 7):
        out = tmp_path / f"p{partitions}"
        opts = PredictOptions(
            run=str(train_run), input=str(shards), output=str(out), batch_size=BATCH, partitions=partitions
        )
        summary = predict(spark, opts)
        ids, preds, got_labels, probs = read_predictions(out)
        assert ids.tolist() == list(range(ROWS)) and summary.rows == ROWS and summary.bad_rows == 0
        assert np.array_equal(got_labels, labels)
        assert torch.equal(torch.tensor(probs, dtype=torch.float32), ref), partitions
        assert preds.tolist() == ref.argmax(dim=1).tolist()
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(float((ref.argmax(dim=1).numpy() == labels).mean()))
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_precision_and_recall_match_scikit_learn(
    spark, shards: Path, train_run: Path, tmp_path
) -> None:
    from sklearn.metrics import confusion_matrix, precision_score, recall_score

    out = tmp_path / "out"
    predict(spark, PredictOptions(run=str(train_run), input=str(shards), output=str(out), batch_size=BATCH))
    _, preds, labels, _ = read_predictions(out)
    report = json.loads((out / "report.json").read_text())
    assert report["confusion_matrix"] == confusion_matrix(labels, preds, labels=range(CLASSES)).tolist()
    for key, fn in (("precision", precision_score), ("recall", recall_score)):
        expected = fn(labels, preds, labels=range(CLASSES), average=None, zero_division=np.nan)
        got = np.array([np.nan if v is None else v for v in report[key]])
        np.testing.assert_allclose(got, expected, equal_nan=True)


def test_model_loads_once_per_python_worker(spark, shards: Path, train_run: Path, tmp_path: Path) -> None:
    log = tmp_path / "loads.txt"
    opts = PredictOptions(
        run=str(train_run), input=str(shards), output=str(tmp_path / "o"), batch_size=16, partitions=8,
        load_log=str(log),
    )  # fmt: skip
    predict(spark, opts)
    loads = [line.split(" ", 1) for line in log.read_text().splitlines()]
    pids = [pid for pid, _ in loads]
    # 8 tasks, 32 batches, on local[2] (two Python workers at a time): each worker loaded it once.
    assert len(pids) == len(set(pids)) and 1 <= len(pids) <= 2, pids
    assert {source for _, source in loads} == {str(train_run)}


def test_shipped_model_is_read_from_spark_files(spark, shards: Path, train_run: Path, tmp_path: Path) -> None:
    from pyspark import SparkFiles

    log = tmp_path / "loads.txt"
    base = {"run": str(train_run), "input": str(shards), "batch_size": BATCH}
    predict(
        spark, PredictOptions(**base, output=str(tmp_path / "shipped"), ship_model=True, load_log=str(log))
    )
    predict(spark, PredictOptions(**base, output=str(tmp_path / "shared")))
    sources = {line.split(" ", 1)[1] for line in log.read_text().splitlines()}
    assert len(sources) == 1 and sources.pop().startswith(SparkFiles.getRootDirectory())
    assert read_predictions(tmp_path / "shipped")[3] == read_predictions(tmp_path / "shared")[3]


def test_ensemble_is_the_mean_of_the_peers_probabilities(spark, shards: Path, tmp_path: Path) -> None:
    run = peer_run(tmp_path / "collab", shards, seeds=(0, 1))
    x, _ = split_features(shards)
    saved = torch.load(run / "peers.pt", weights_only=False)
    peers = []
    for peer in saved["peers"]:
        model = build_model("mlp", SHAPE, CLASSES, load_config(None, ["model.hidden=16"]).model)
        model.load_state_dict(peer["state"])
        peers.append(reference_probs(model, x))
    assert not torch.equal(peers[0], peers[1])
    predict(
        spark, PredictOptions(run=str(run), input=str(shards), output=str(tmp_path / "e"), batch_size=BATCH)
    )
    _, preds, _, probs = read_predictions(tmp_path / "e")
    got = torch.tensor(probs, dtype=torch.float32)
    assert torch.equal(got, (peers[0] + peers[1]) / 2)
    assert preds.tolist() == ((peers[0] + peers[1]) / 2).argmax(dim=1).tolist()
    opts = PredictOptions(
        run=str(run), input=str(shards), output=str(tmp_path / "p1"), batch_size=BATCH, fusion="peer:1"
    )
    predict(spark, opts)
    assert torch.equal(torch.tensor(read_predictions(tmp_path / "p1")[3], dtype=torch.float32), peers[1])


def test_average_fusion_is_the_parameter_mean_for_a_shared_init(spark, shards: Path, tmp_path: Path) -> None:
    run = peer_run(tmp_path / "same", shards, seeds=(3, 3))
    saved = torch.load(run / "peers.pt", weights_only=False)
    a, b = (p["state"] for p in saved["peers"])
    model = build_model("mlp", SHAPE, CLASSES, load_config(None, ["model.hidden=16"]).model)
    model.load_state_dict({k: (a[k] + b[k]) / 2 for k in a})
    x, _ = split_features(shards)
    out = tmp_path / "avg"
    predict(
        spark,
        PredictOptions(run=str(run), input=str(shards), output=str(out), batch_size=BATCH, fusion="average"),
    )
    torch.testing.assert_close(
        torch.tensor(read_predictions(out)[3]), reference_probs(model, x), rtol=0, atol=1e-6
    )


def test_malformed_rows_become_null_and_are_counted_or_fail_the_job(
    spark, shards: Path, train_run: Path, tmp_path: Path, capsys
) -> None:
    x, _ = split_features(shards)
    rows = [list(map(float, r)) for r in x[:64].numpy()]
    rows[5] = rows[5][:10]  # too short
    rows[9] = None  # type: ignore[call-overload]
    rows[20][3] = math.nan
    rows[30][7] = None  # type: ignore[call-overload]
    data = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"id": pa.array(range(64), pa.int64()), "pixels": pa.array(rows, pa.list_(pa.float32()))}),
        data,
    )
    out = tmp_path / "nulls"
    summary = predict(
        spark,
        PredictOptions(
            run=str(train_run), input=str(data), output=str(out), features_col="pixels", batch_size=BATCH
        ),
    )
    ids, preds, got_labels, probs = read_predictions(out)
    assert got_labels is None and summary.bad_rows == 4
    bad = {5, 9, 20, 30}
    assert [i for i, p in zip(ids, probs, strict=True) if p is None] == sorted(bad)
    assert json.loads((out / "report.json").read_text())["bad_row_ids"] == sorted(bad)
    model = build_model("cnn", SHAPE, CLASSES)
    model.load_state_dict(load_model_state(train_run / "checkpoint.pt"))
    ref = reference_probs(model, x[:64])
    good = [i for i in range(64) if i not in bad]
    assert torch.equal(torch.tensor([probs[i] for i in good], dtype=torch.float32), ref[good])
    assert [int(preds[i]) for i in good] == ref[good].argmax(dim=1).tolist()

    failing = tmp_path / "fail"
    argv = [
        "--run",
        str(train_run),
        "--input",
        str(data),
        "--output",
        str(failing),
        "--features-col",
        "pixels",
    ]
    assert main([*argv, "--bad-rows", "fail", *spark_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ids 5, 9, 20, 30" in err[0] and "--bad-rows null" in err[0]
    assert not failing.exists()


def _bad_run_without_model(tmp_path: Path, train_run: Path) -> Path:
    run = tmp_path / "no-model"
    run.mkdir()
    (run / "result.json").write_text((train_run / "result.json").read_text())
    return run


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-model", "no checkpoint.pt"),
        ("shape", "takes 64"),
        ("fusion", "unknown fusion"),
        ("fusion-on-train", "drop --fusion"),
        ("exists", "already exists"),
        ("inside-run", "must not overlap"),
        ("batch", "multiple of 16"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    spark, shards: Path, train_run: Path, tmp_path: Path, capsys, case: str, message: str
) -> None:
    out = tmp_path / "out"
    run, data, extra = train_run, shards, []
    if case == "no-model":
        run = _bad_run_without_model(tmp_path, train_run)
    elif case == "shape":
        x = np.zeros((8, 16), np.float32)
        data = write_shards(tmp_path / "wide", {"test": [(x, np.zeros(8, np.int64))]}, (16,), CLASSES)
    elif case == "fusion":
        run = peer_run(tmp_path / "collab", shards, seeds=(0, 1))
        extra = ["--fusion", "median"]
    elif case == "fusion-on-train":
        extra = ["--fusion", "ensemble"]
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "inside-run":
        out = train_run / "predictions"
    elif case == "batch":
        extra = ["--batch-size", "100"]
    assert main(["--run", str(run), "--input", str(data), "--output", str(out), *extra, *spark_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]


def test_average_of_peers_from_different_inits_is_refused(
    spark, shards: Path, tmp_path: Path, capsys
) -> None:
    run = peer_run(tmp_path / "collab", shards, seeds=(0, 1))
    out = tmp_path / "avg"
    assert (
        main(
            [
                "--run",
                str(run),
                "--input",
                str(shards),
                "--output",
                str(out),
                "--fusion",
                "average",
                *spark_args(),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: --fusion average: ") and "different initialisations" in err and "\n" not in err
    )
    assert not out.exists()


@pytest.mark.distributed
def test_collab_job_saves_peers_that_predict_reloads(spark, shards: Path, tmp_path: Path) -> None:
    from spark_jobs.collab import main as collab_main

    run = tmp_path / "dml"
    cfg = tmp_path / "dml.toml"
    cfg.write_text(
        f"""
[model]
name = "mlp784"
[data]
shards = "{shards}"
[train]
epochs = 1
batch_size = 32
[launch]
num_processes = 2
timeout_s = 240
[run]
dir = "{run}"
[collab]
mode = "dml"
peers = ["mlp784", "cnn"]
"""
    )
    assert collab_main(["--config", str(cfg), *spark_args()]) == 0
    saved = torch.load(run / "peers.pt", weights_only=False)
    assert [p["name"] for p in saved["peers"]] == ["mlp784", "cnn"]
    assert saved["feature_shape"] == list(SHAPE) and saved["num_classes"] == CLASSES
    result = json.loads((run / "result.json").read_text())
    assert [p["init_fingerprint"] for p in saved["peers"]] == result["init_fingerprints"]
    assert "peer_models" not in result
    x, labels = split_features(shards)
    peers = []
    for peer in saved["peers"]:
        model = build_model(peer["name"], SHAPE, CLASSES)
        model.load_state_dict(peer["state"])
        peers.append(reference_probs(model, x))
    out = tmp_path / "pred"
    summary = predict(
        spark, PredictOptions(run=str(run), input=str(shards), output=str(out), batch_size=BATCH)
    )
    assert torch.equal(torch.tensor(read_predictions(out)[3], dtype=torch.float32), (peers[0] + peers[1]) / 2)
    # The run's own ensemble accuracy on the same test split (computed by the ranks).
    assert summary.accuracy == pytest.approx(result["final"]["ensemble_acc"])
    assert summary.accuracy == pytest.approx(
        float((((peers[0] + peers[1]) / 2).argmax(1).numpy() == labels).mean())
    )
