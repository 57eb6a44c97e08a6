"""training/data.py against shards the test writes itself with pyarrow (no Spark involved)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from contracts.manifest import Manifest
from training.data import (
    ShardData,
    iter_batches,
    load_shard,
    num_shards,
    stream_batches,
)

DIM = 6


def _write_dir(root: Path, shard_rows: list[int], fixed_size: bool = False, files_per_shard: int = 1) -> dict:
    """A tiny shards directory in the documented layout, built by hand."""
    rng = np.random.default_rng(7)
    shards = []
    next_id = 100
    for index, rows in enumerate(shard_rows):
        files = []
        hist = [0, 0, 0]
        for f, part in enumerate(np.array_split(np.arange(rows), files_per_shard)):
            n = len(part)
            ids = np.arange(next_id, next_id + n, dtype=np.int64)
            next_id += n
            labels = (ids % 3).astype(np.int32)
            feats = rng.random((n, DIM), dtype=np.float32)
            flat = pa.array(feats.ravel())
            column = (
                pa.FixedSizeListArray.from_arrays(flat, DIM)
                if fixed_size
                else pa.ListArray.from_arrays(
                    pa.array(np.arange(0, (n + 1) * DIM, DIM, dtype=np.int32)), flat
                )
            )
            rel = f"train/shard-{index:05d}/part-{f:05d}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                pa.table({"id": ids, "label": labels, "features": column}), root / rel, row_group_size=4
            )
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            files.append({"path": rel, "rows": n, "sha256": digest, "bytes": (root / rel).stat().st_size})
            for lab in labels:
                hist[int(lab)] += 1
        shards.append(
            {
                "index": index,
                "path": f"train/shard-{index:05d}",
                "rows": rows,
                "label_histogram": hist,
                "files": files,
            }
        )
    manifest = {
        "format": "spark-collab-shards",
        "version": 1,
        "num_classes": 3,
        "feature_shape": [2, 3],
        "splits": {"train": {"rows": sum(shard_rows), "shards": shards}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _reference(root: Path, manifest: dict, shard: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entries = manifest["splits"]["train"]["shards"]
    chosen = entries if shard is None else [entries[shard]]
    tables = [pq.read_table(root / f["path"]) for e in chosen for f in e["files"]]
    table = pa.concat_tables(tables)
    feats = np.array(table.column("features").to_pylist(), dtype=np.float32)
    return table.column("id").to_numpy(), table.column("label").to_numpy(), feats


@pytest.mark.parametrize("fixed_size", [False, True])
def test_load_one_shard_matches_file(tmp_path: Path, fixed_size: bool) -> None:
    manifest = _write_dir(tmp_path, [10, 7], fixed_size=fixed_size)
    data = load_shard(tmp_path, "train", 1)
    ids, labels, feats = _reference(tmp_path, manifest, 1)
    assert isinstance(data, ShardData) and len(data) == 7
    assert data.features.dtype == torch.float32 and data.features.shape == (7, DIM)
    assert data.labels.dtype == torch.int64 and data.ids.dtype == torch.int64
    assert data.feature_shape == (2, 3) and data.num_classes == 3
    np.testing.assert_array_equal(data.ids.numpy(), ids)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    np.testing.assert_array_equal(data.features.numpy(), feats)


def test_load_all_shards_in_order(tmp_path: Path) -> None:
    manifest = _write_dir(tmp_path, [5, 8, 3], files_per_shard=2)
    assert num_shards(tmp_path) == 3
    assert Manifest.read(tmp_path).get("num_classes") == 3
    data = load_shard(tmp_path, "train")
    ids, _, feats = _reference(tmp_path, manifest, None)
    assert ids.tolist() == list(range(100, 116))
    np.testing.assert_array_equal(data.ids.numpy(), ids)
    np.testing.assert_array_equal(data.features.numpy(), feats)


def test_checksum_and_row_count_mismatch_name_the_file(tmp_path: Path) -> None:
    manifest = _write_dir(tmp_path, [6, 6])
    bad = manifest["splits"]["train"]["shards"][0]["files"][0]
    bad["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=re.escape("part-00000.parquet: sha256")):
        load_shard(tmp_path, "train", 0)
    load_shard(tmp_path, "train", 0, verify=False)  # verify=False skips the check
    load_shard(tmp_path, "train", 1)  # the other shard is fine

    manifest = _write_dir(tmp_path, [6, 6])
    manifest["splits"]["train"]["shards"][1]["files"][0]["rows"] = 5
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=re.escape("shard-00001/part-00000.parquet: 6 rows, the manifest says 5")
    ):
        load_shard(tmp_path, "train", 1)


def test_missing_manifest_split_or_shard(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("no manifest")):
        load_shard(tmp_path)
    _write_dir(tmp_path, [4])
    with pytest.raises(ValueError, match=re.escape("no split 'val'")):
        load_shard(tmp_path, "val")
    with pytest.raises(ValueError, match=re.escape("no shard 3")):
        load_shard(tmp_path, "train", 3)


def _data(n: int) -> ShardData:
    feats = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
    return ShardData(feats, torch.arange(n) % 4, torch.arange(n), 4, (2,))


def test_iter_batches_covers_every_row_once_and_is_deterministic() -> None:
    data = _data(23)
    batches = list(iter_batches(data, 5, shuffle=True, seed=3, epoch=0))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([y for _, y in batches])
    rows = torch.cat([x for x, _ in batches])
    # Row i has features (2i, 2i+1) and label i % 4: batches keep features and labels together.
    original = (rows[:, 0] / 2).long()
    assert sorted(original.tolist()) == list(range(23))
    assert torch.equal(seen, original % 4)
    again = torch.cat([x for x, _ in iter_batches(data, 5, shuffle=True, seed=3, epoch=0)])
    assert torch.equal(rows, again)
    other_epoch = torch.cat([x for x, _ in iter_batches(data, 5, shuffle=True, seed=3, epoch=1)])
    other_seed = torch.cat([x for x, _ in iter_batches(data, 5, shuffle=True, seed=4, epoch=0)])
    assert not torch.equal(rows, other_epoch) and not torch.equal(rows, other_seed)


def test_iter_batches_in_order_and_drop_last() -> None:
    data = _data(11)
    batches = list(iter_batches(data, 4, shuffle=False, seed=0, epoch=0))
    assert torch.equal(torch.cat([x for x, _ in batches]), data.features)
    assert [len(y) for _, y in iter_batches(data, 4, shuffle=True, seed=0, epoch=0, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError):
        list(iter_batches(data, 0, shuffle=False, seed=0, epoch=0))


def test_stream_batches_equal_in_memory_load(tmp_path: Path) -> None:
    _write_dir(tmp_path, [9, 13], files_per_shard=2)
    whole = load_shard(tmp_path, "train")
    streamed = list(stream_batches(tmp_path, "train", None, 5))
    assert [len(y) for _, y in streamed] == [5, 5, 5, 5, 2]
    assert torch.equal(torch.cat([x for x, _ in streamed]), whole.features)
    assert torch.equal(torch.cat([y for _, y in streamed]), whole.labels)
    one = list(stream_batches(tmp_path, "train", 1, 100))
    assert len(one) == 1 and torch.equal(one[0][0], load_shard(tmp_path, "train", 1).features)
