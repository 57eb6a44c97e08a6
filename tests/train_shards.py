"""Tiny shard directories in the layout of `spark-collab shard` (manifest + Parquet), for training tests.

Written with pyarrow directly so the training tests do not depend on the shard job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def blobs(n: int, dim: int = 16, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: class k centred at 3*e_k (so a linear model can learn them)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.normal(0.0, 1.0, size=(n, dim)).astype(np.float32)
    x[np.arange(n), y % dim] += 3.0
    return x, y


def write_shards(
    out: Path,
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    feature_shape: tuple[int, ...],
    num_classes: int,
) -> Path:
    """Write ``splits[name] = [(features [n, D], labels [n]), ...]`` (one entry per shard)."""
    manifest: dict = {
        "format": "spark-collab-shards",
        "version": 1,
        "feature_shape": list(feature_shape),
        "num_classes": num_classes,
        "splits": {},
    }
    next_id = 0
    for split, shards in splits.items():
        entries = []
        for i, (x, y) in enumerate(shards):
            rel = f"{split}/shard-{i:05d}"
            (out / rel).mkdir(parents=True, exist_ok=True)
            ids = np.arange(next_id, next_id + len(y), dtype=np.int64)
            next_id += len(y)
            table = pa.table(
                {
                    "id": pa.array(ids),
                    "label": pa.array(y.astype(np.int32)),
                    "features": pa.array(list(x.astype(np.float32)), type=pa.list_(pa.float32())),
                }
            )
            fpath = out / rel / "part-00000.parquet"
            pq.write_table(table, fpath)
            digest = hashlib.sha256(fpath.read_bytes()).hexdigest()
            entries.append(
                {
                    "path": rel,
                    "rows": len(y),
                    "files": [{"path": f"{rel}/part-00000.parquet", "sha256": digest, "rows": len(y)}],
                }
            )
        manifest["splits"][split] = {"shards": entries}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def blob_shards(out: Path, n_train: int = 256, shards: int = 2, dim: int = 16, classes: int = 4) -> Path:
    """Train split in ``shards`` equal shards, plus a val and a test split (one shard each)."""
    x, y = blobs(n_train + 128, dim, classes)
    per = n_train // shards
    train = [(x[i * per : (i + 1) * per], y[i * per : (i + 1) * per]) for i in range(shards)]
    return write_shards(
        out,
        {
            "train": train,
            "val": [(x[n_train : n_train + 64], y[n_train : n_train + 64])],
            "test": [(x[n_train + 64 :], y[n_train + 64 :])],
        },
        (dim,),
        classes,
    )
