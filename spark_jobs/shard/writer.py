"""Writing the shards: the ``mapInArrow`` function that runs in Spark's Python workers.

:func:`make_writer` is called on the driver and returns ``write_partition``, which Spark ships to
the executors; it and :func:`write_shard_file` (called from it) run there. Each task writes its
shards with pyarrow (sorted by id, fixed file names, no timestamps, so reruns are byte-identical)
and returns only metadata (rows, sha256, label histogram), from which the driver writes the manifest.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# Row groups decode in parallel (one thread each) when a rank loads its shard: 2,048 rows of 784
# floats (~6 MB decoded) give a 5,000-row shard three groups, which loads 1.5x faster on two cores
# than one group (bench/loader.py); smaller groups gain nothing more.
ROW_GROUP_ROWS = 2048
META_SCHEMA_DDL = (
    "split string, shard int, path string, rows long, sha256 string, bytes long, label_histogram array<long>"
)


def shard_dir(split: str, shard: int) -> str:
    return f"{split}/shard-{shard:05d}"


def write_shard_file(table: pa.Table, path: Path, num_classes: int) -> dict[str, Any]:
    """Write one shard deterministically and describe it. Runs in Spark's Python workers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.sort_by("id").combine_chunks()
    labels = table.column("label").to_numpy()
    out = pa.table(
        {
            "id": table.column("id").cast(pa.int64()),
            "label": table.column("label").cast(pa.int32()),
            "features": table.column("features").cast(pa.list_(pa.float32())),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # A retried or speculative task writes its own temporary file; the rename is atomic.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    pq.write_table(out, tmp, compression="snappy", row_group_size=ROW_GROUP_ROWS, write_statistics=False)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return {
        "rows": out.num_rows,
        "sha256": digest,
        "bytes": size,
        "label_histogram": np.bincount(labels, minlength=num_classes).astype(np.int64).tolist(),
    }


def make_writer(
    root: str, keys: list[tuple[str, int]], num_classes: int
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """mapInArrow function: write each shard of a task, yield its metadata.

    The task's rows arrive sorted by shard key, so one shard is buffered at a time and written as
    soon as the next key shows up.
    """

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc

        def flush(key: int, parts: list[pa.RecordBatch]) -> pa.RecordBatch:
            split, shard = keys[key]
            rel = f"{shard_dir(split, shard)}/part-00000.parquet"
            meta = write_shard_file(pa.Table.from_batches(parts), Path(root) / rel, num_classes)
            return pa.RecordBatch.from_pylist(
                [{"split": split, "shard": shard, "path": rel, **meta}], schema=meta_schema_arrow()
            )

        current: int | None = None
        parts: list[pa.RecordBatch] = []
        for batch in batches:
            key_col = batch.column("_key")
            for key in pc.unique(key_col).to_pylist():  # in order of appearance = sorted
                if key != current:
                    if current is not None:
                        yield flush(current, parts)
                    current, parts = key, []
                parts.append(batch.filter(pc.equal(key_col, key)))
        if current is not None:
            yield flush(current, parts)

    return write_partition


def meta_schema_arrow() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("split", pa.string()),
            ("shard", pa.int32()),
            ("path", pa.string()),
            ("rows", pa.int64()),
            ("sha256", pa.string()),
            ("bytes", pa.int64()),
            ("label_histogram", pa.list_(pa.int64())),
        ]
    )
