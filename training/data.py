"""Rank-side loading of the Parquet shards written by ``spark-collab shard`` (no pyspark here).

Layout (see docs/data.md)::

    DIR/manifest.json
    DIR/<split>/shard-<nnnnn>/part-<nnnnn>.parquet     columns id:int64, label:int32, features:list<float32>

A shard that fits in memory is read once into tensors (:func:`load_shard`) and batched by index
(:func:`iter_batches`): no per-row Python, no per-batch decoding. A shard that does not fit is read
one Parquet record batch at a time (:func:`stream_batches`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from contracts.manifest import Manifest


@dataclass
class ShardData:
    """One shard (or a whole split) in memory."""

    features: torch.Tensor
    """float32 ``[N, D]``, D = prod(feature_shape), already scaled as recorded in the manifest."""
    labels: torch.Tensor
    """int64 ``[N]``."""
    ids: torch.Tensor
    """int64 ``[N]``: the stable source ids."""
    num_classes: int
    feature_shape: tuple[int, ...]
    """Per-sample shape, e.g. (28, 28) for MNIST, (8, 8) for digits, (D,) for tabular sources."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def num_shards(shards_dir: str | os.PathLike, split: str = "train") -> int:
    """How many shards the split has (ValueError when the split is absent; 0 when it got no rows)."""
    return len(Manifest.read(shards_dir, kind="images").shards(split))


def _shard_entries(manifest: Manifest, split: str, shard: int | None) -> list[dict[str, Any]]:
    return manifest.shards(split) if shard is None else [manifest.shard(split, shard)]


def _read_file(path: Path, entry: dict[str, Any], verify: bool) -> pa.Table:
    # Read the bytes once: the checksum and the Parquet decoder share the same buffer.
    data = path.read_bytes()
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise ValueError(f"{path}: sha256 {digest} does not match the manifest ({entry['sha256']})")
    table = pq.read_table(pa.BufferReader(data), columns=["id", "label", "features"])
    if verify and table.num_rows != entry["rows"]:
        raise ValueError(f"{path}: {table.num_rows} rows, the manifest says {entry['rows']}")
    return table


def _features_numpy(column: pa.ChunkedArray | pa.Array, dim: int, where: Path | str) -> np.ndarray:
    """``[N, dim]`` float32 view of a list<float32> column, without copying when Arrow allows."""
    if isinstance(column, pa.ChunkedArray):
        # combine_chunks copies even a single chunk; take that chunk as it is.
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        array = column
    if array.null_count:
        raise ValueError(f"{where}: null feature vectors")
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        offsets = array.offsets.to_numpy()
        if len(array) and not np.array_equal(np.diff(offsets), np.full(len(array), dim)):
            raise ValueError(f"{where}: feature vectors are not all of length {dim}")
    elif pa.types.is_fixed_size_list(array.type):
        if array.type.list_size != dim:
            raise ValueError(f"{where}: feature vectors have length {array.type.list_size}, expected {dim}")
    else:
        raise ValueError(f"{where}: features column has type {array.type}, expected a list of float32")
    values = array.flatten()  # respects slicing, unlike .values
    if values.type != pa.float32():
        values = values.cast(pa.float32())
    flat = values.to_numpy(zero_copy_only=values.null_count == 0)
    return flat.reshape(len(array), dim)


def _to_shard_data(tables: list[pa.Table], manifest: Manifest, where: Path | str) -> ShardData:
    feature_shape = tuple(int(x) for x in manifest.get("feature_shape"))
    dim = math.prod(feature_shape)
    if len(tables) == 1:
        table = tables[0]
    elif tables:
        table = pa.concat_tables(tables)
    else:
        table = pa.table(
            {
                "id": pa.array([], pa.int64()),
                "label": pa.array([], pa.int32()),
                "features": pa.array([], pa.list_(pa.float32())),
            }
        )
    features = _features_numpy(table.column("features"), dim, where)
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    labels = table.column("label").to_numpy().astype(np.int64)
    num_classes = int(manifest.get("num_classes"))
    return ShardData(
        features=_from_numpy(features),
        labels=torch.from_numpy(labels),
        ids=_from_numpy(ids),
        num_classes=num_classes,
        feature_shape=feature_shape,
    )


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.flags.writeable:
        return torch.from_numpy(array)
    # Arrow memory is immutable; torch.from_numpy warns about non-writable arrays but shares the
    # buffer all the same. Silence that one warning instead of paying for a copy.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def load_shard(
    shards_dir: str | os.PathLike,
    split: str = "train",
    shard: int | None = None,
    verify: bool = True,
) -> ShardData:
    """Read one shard (``shard=i``) or the whole split (``shard=None``, shards in order) into tensors.

    With ``verify`` every file's sha256 and row count and the shard's row count are checked against
    the manifest; a mismatch raises ValueError naming the file.
    """
    root = Path(shards_dir)
    manifest = Manifest.read(root, kind="images")
    tables: list[pa.Table] = []
    for entry in _shard_entries(manifest, split, shard):
        rows = 0
        for file_entry in entry["files"]:
            table = _read_file(root / file_entry["path"], file_entry, verify)
            rows += table.num_rows
            tables.append(table)
        if verify and rows != entry["rows"]:
            raise ValueError(f"{root / entry['path']}: {rows} rows, the manifest says {entry['rows']}")
    where = root / split if shard is None else root / manifest.shard(split, shard)["path"]
    return _to_shard_data(tables, manifest, where)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) only, identical on every machine."""
    generator = torch.Generator()
    # Mix seed and epoch into one 63-bit value so (seed, epoch) pairs do not collide for small ints.
    generator.manual_seed((seed * 1_000_003 + epoch * 7919 + 0x5EED) % (2**63 - 1))
    return torch.randperm(n, generator=generator)


def iter_batches(
    data: ShardData,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features [B, D], labels [B])`` batches over in-memory tensors, by index.

    Shuffled order depends only on (seed, epoch). Unshuffled batches are views (no copy).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(data)
    stop = n - n % batch_size if drop_last else n
    if not shuffle:
        for start in range(0, stop, batch_size):
            yield data.features[start : start + batch_size], data.labels[start : start + batch_size]
        return
    order = epoch_permutation(n, seed, epoch)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield data.features.index_select(0, index), data.labels.index_select(0, index)


def stream_batches(
    shards_dir: str | os.PathLike,
    split: str,
    shard: int | None,
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches read from disk one Parquet record batch at a time, in stored order (no shuffle).

    For shards larger than memory: at most about one batch is decoded at a time. Checksums are
    not verified here (that would need a full extra read); row counts are.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    root = Path(shards_dir)
    manifest = Manifest.read(root, kind="images")
    dim = math.prod(int(x) for x in manifest.get("feature_shape"))
    # Parquet hands out batches that stop at row-group and file ends; carry the remainder over so
    # every batch but the last has exactly batch_size rows.
    pending_x: list[torch.Tensor] = []
    pending_y: list[torch.Tensor] = []
    pending = 0
    for entry in _shard_entries(manifest, split, shard):
        for file_entry in entry["files"]:
            path = root / file_entry["path"]
            rows = 0
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=batch_size, columns=["label", "features"]):
                features = _from_numpy(_features_numpy(batch.column("features"), dim, path))
                labels = torch.from_numpy(batch.column("label").to_numpy().astype(np.int64))
                rows += len(labels)
                pending_x.append(features)
                pending_y.append(labels)
                pending += len(labels)
                if pending >= batch_size:
                    xs, ys = torch.cat(pending_x), torch.cat(pending_y)
                    full = pending - pending % batch_size
                    for start in range(0, full, batch_size):
                        yield xs[start : start + batch_size], ys[start : start + batch_size]
                    pending_x, pending_y, pending = [xs[full:]], [ys[full:]], pending - full
            if rows != file_entry["rows"]:
                raise ValueError(f"{path}: {rows} rows, the manifest says {file_entry['rows']}")
    if pending:
        yield torch.cat(pending_x), torch.cat(pending_y)
