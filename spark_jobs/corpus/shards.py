"""Splitting tokenized documents into train/val and writing one token shard per rank.

The split goes by document: a document is in val when a seeded hash of its ``doc_id`` falls below
the val fraction, so no document straddles the two and the choice does not depend on the others.
Within a split, documents are ordered by a second seeded hash (a deterministic shuffle), and train
is cut into ``--shards`` contiguous runs of about equal token counts (every shard gets at least one
document); val is one shard, which every rank can evaluate on whatever the world size.

Only ``doc_id`` and token counts (16 bytes a document) come to the driver to plan this; the tokens
go from the executors straight into the shard files (:func:`spark_jobs.corpus.workers.write_task`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.common.errors import JobInputError
from spark_jobs.corpus.workers import ENTRY_DDL, write_task

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPLITS = ("train", "val")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(values: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """SplitMix64 finalizer of ``values ^ key``: a seeded, well-spread 64-bit hash (numpy, uint64)."""
    key = np.uint64((seed * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        # Adding the golden-ratio increment keeps a zero input (value == key) away from a zero hash.
        z = ((values.astype(np.uint64) ^ key) + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass
class ShardPlan:
    doc_ids: np.ndarray
    part: np.ndarray
    """split_index * shards + shard, per document."""
    position: np.ndarray
    """Order of the document inside its shard."""
    shards: int


def cut_points(tokens: np.ndarray, shards: int) -> np.ndarray:
    """Start index of each of ``shards`` contiguous runs of about equal token totals, none empty."""
    n = len(tokens)
    cumulative = np.concatenate([[0], np.cumsum(tokens)])
    targets = np.arange(shards) * cumulative[-1] / shards
    cuts = np.searchsorted(cumulative, targets, side="left")
    cuts = np.clip(cuts, np.arange(shards), n - shards + np.arange(shards))
    for k in range(1, shards):
        cuts[k] = max(cuts[k], cuts[k - 1] + 1)
    cuts[0] = 0
    return cuts


def plan_shards(
    doc_ids: np.ndarray, n_tokens: np.ndarray, val_fraction: float, shards: int, seed: int
) -> ShardPlan:
    """Which split, shard and position each document gets (pure numpy; see the module docstring)."""
    split_hash = mix64(doc_ids, seed, 1)
    in_val = (
        split_hash < np.uint64(int(val_fraction * 2.0**64))
        if val_fraction > 0
        else np.zeros(len(doc_ids), bool)
    )
    n_val, n_train = int(in_val.sum()), int((~in_val).sum())
    if val_fraction > 0 and n_val == 0:
        raise JobInputError(
            f"--val {val_fraction}: no document of {len(doc_ids)} fell in val; "
            "use a smaller document unit (--docs paragraph or line), a larger --val, or --val 0"
        )
    if n_train < shards:
        raise JobInputError(
            f"--shards {shards}: only {n_train} train documents; pass --shards {max(n_train, 1)} or less, "
            "or a smaller document unit (--docs paragraph or line)"
        )
    order_hash = mix64(doc_ids, seed, 2)
    part = np.empty(len(doc_ids), dtype=np.int64)
    position = np.empty(len(doc_ids), dtype=np.int64)
    for split_index, members in enumerate((np.flatnonzero(~in_val), np.flatnonzero(in_val))):
        ordered = members[np.lexsort((doc_ids[members], order_hash[members]))]
        position[ordered] = np.arange(len(ordered))
        if split_index == 0:
            cuts = cut_points(n_tokens[ordered], shards)
            shard_of = np.searchsorted(cuts, np.arange(len(ordered)), side="right") - 1
            part[ordered] = shard_of
        else:
            part[ordered] = shards
    return ShardPlan(doc_ids=doc_ids, part=part, position=position, shards=shards)


def write_shards(
    spark: SparkSession, tokens: DataFrame, plan: ShardPlan, root: str, dtype: str
) -> dict[str, dict[str, Any]]:
    """Write every shard of ``plan`` under ``root`` from the executors; return the manifest ``splits``."""
    import pyarrow as pa

    assignment = spark.createDataFrame(
        pa.table({"doc_id": plan.doc_ids, "part": plan.part, "position": plan.position})
    )
    parts = plan.shards + 1
    rows = (
        tokens.join(assignment, "doc_id")
        .repartition(parts, "part")
        .sortWithinPartitions("part", "position")
        .select("part", "tokens", "n_tokens")
    )
    # Entries carry split names; val is part `shards`, which the writer maps back to ("val", 0).
    names = tuple(["train"] * plan.shards + ["val"])
    written = rows.mapInArrow(_writer(root, dtype, names), ENTRY_DDL).collect()
    splits: dict[str, dict[str, Any]] = {name: {"shards": []} for name in SPLITS}
    for row in written:
        entry = json.loads(row["entry"])
        splits[entry.pop("split")]["shards"].append(entry)
    for split in splits.values():
        split["shards"].sort(key=lambda e: e["index"])
        split["documents"] = int(sum(e["documents"] for e in split["shards"]))
        split["tokens"] = int(sum(e["rows"] for e in split["shards"]))
    return {name: split for name, split in splits.items() if split["shards"]}


def _writer(root: str, dtype: str, names: tuple[str, ...]):
    # One "split" per part: parts 0..shards-1 are train shards 0..shards-1, the last is val shard 0.
    shard_index = (*range(len(names) - 1), 0)

    def split_of(part: int) -> tuple[str, int]:
        return names[part], shard_index[part]

    return write_task(root, dtype, split_of)
