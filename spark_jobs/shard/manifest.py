"""The shard job's ``manifest.json``: what was read, how it was split, scaled and written.

Built on the driver from the few metadata rows the writers return (see writer.py); nothing here
runs in Spark's workers. training/data.py and contracts/manifest.py read what this writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.shard.plan import Plan, distribution_distances
from spark_jobs.shard.writer import shard_dir

if TYPE_CHECKING:
    from spark_jobs.shard.options import ShardOptions
    from spark_jobs.shard.sources import Source

MANIFEST_FORMAT = "spark-collab-shards"


@dataclass(frozen=True)
class Scaling:
    """The feature transform applied, as recorded: ``(x / divide_by - mean) / std`` or ``x / divide_by``."""

    divide_by: float
    normalize: str  # none | global | explicit
    mean: float | None = None
    std: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "divide_by": self.divide_by,
            "normalize": self.normalize,
            "mean": self.mean,
            "std": self.std,
            "formula": "(x / divide_by - mean) / std" if self.mean is not None else "x / divide_by",
        }


def build_manifest(
    metas: list[Any],
    src: Source,
    options: ShardOptions,
    scaling: Scaling,
    num_classes: int,
    feature_shape: tuple[int, ...],
    class_counts: list[int],
    plan: Plan,
    keys: list[tuple[str, int]],
    total: int,
) -> dict[str, Any]:
    """manifest.json from the writers' metadata, after checking it against the plan (every planned
    shard written once, every row written, each label histogram as planned)."""
    by_key = {(m["split"], m["shard"]): m for m in metas}
    if len(by_key) != len(metas) or set(by_key) != set(keys):
        raise RuntimeError(f"shard writers reported {sorted(by_key)} but the plan has {keys}")
    written = sum(m["rows"] for m in metas)
    if written != total:
        raise RuntimeError(f"wrote {written} rows, the source has {total}")
    splits: dict[str, Any] = {}
    for split in options.fractions:
        shards = []
        for s in range(plan.shards_per_split[split]):
            m = by_key[(split, s)]
            hist = list(m["label_histogram"])
            if hist != plan.expected[(split, s)]:
                raise RuntimeError(
                    f"shard {split}/{s}: histogram {hist} differs from the plan {plan.expected[(split, s)]}"
                )
            shards.append(
                {
                    "index": s,
                    "path": shard_dir(split, s),
                    "rows": m["rows"],
                    "label_histogram": hist,
                    "files": [
                        {"path": m["path"], "rows": m["rows"], "bytes": m["bytes"], "sha256": m["sha256"]}
                    ],
                }
            )
        hists = [sh["label_histogram"] for sh in shards]
        splits[split] = {
            "rows": sum(sh["rows"] for sh in shards),
            "label_histogram": [int(x) for x in np.sum(hists, axis=0)],
            "distance_to_pooled": distribution_distances(hists),
            "shards": shards,
        }
    source = {**src.describe(), "rows": total, "class_counts": class_counts}
    if src.kind in {"csv", "parquet"}:
        opts = options.table
        source["columns"] = {
            "label": opts.label_col,
            "features": opts.features_col or list(opts.feature_cols) or "all other columns",
            "id": opts.id_col or "row index in file order",
        }
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "source": source,
        "seed": options.seed,
        "partition": {
            **options.partition.to_json(),
            "num_shards": options.shards,
            "splits": list(options.partition_splits),
        },
        "split_fractions": dict(options.fractions),
        "split_method": "per class: rank rows by xxhash64(seed, id), cut ranks by the fractions",
        "scaling": scaling.to_json(),
        "num_classes": num_classes,
        "feature_shape": list(feature_shape),
        "schema": [
            {"name": "id", "type": "int64"},
            {"name": "label", "type": "int32"},
            {"name": "features", "type": "list<float32>", "length": math.prod(feature_shape)},
        ],
        "splits": splits,
    }
