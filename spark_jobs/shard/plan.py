"""Planning of the shard job: per-class row counts -> which rank range of each class goes to which
(split, shard). Pure Python and numpy on the driver; nothing here is shipped to Spark's workers.

Splits are stratified (each class is cut by the fractions); partitioners decide how many of a
class's rows each shard of a partitioned split gets (iid / dirichlet:ALPHA / pathological:K). The
plan is a function of (class counts, options, seed) only, so reruns give the same shards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.options import Partition

DIRICHLET_TRIES = 1000


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, ties to the lower index)."""
    weight_sum = float(sum(weights))
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_counts(class_counts: Sequence[int], fractions: Mapping[str, float]) -> dict[str, list[int]]:
    """Rows per (split, class): every class is cut by the same fractions (stratified)."""
    names = list(fractions)
    per_split: dict[str, list[int]] = {name: [] for name in names}
    for n in class_counts:
        for name, count in zip(names, apportion(n, [fractions[s] for s in names]), strict=True):
            per_split[name].append(count)
    return per_split


def plan_iid(class_counts: Sequence[int], shards: int) -> list[list[int]]:
    """Counts [shard][class]: deal the class-ordered rows round-robin, so every shard keeps the class
    proportions and shard sizes differ by at most one."""
    matrix = [[0] * len(class_counts) for _ in range(shards)]
    offset = 0
    for c, n in enumerate(class_counts):
        for s in range(shards):
            # positions offset..offset+n-1 that are congruent to s modulo shards
            first = (s - offset) % shards
            matrix[s][c] = 0 if first >= n else (n - 1 - first) // shards + 1
        offset += n
    return matrix


def plan_dirichlet(
    class_counts: Sequence[int], shards: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    """Counts [shard][class] with per-class shard proportions drawn from Dirichlet(alpha); redrawn
    until every shard has at least one row (the usual NIID-Bench convention)."""
    for _ in range(DIRICHLET_TRIES):
        columns = [apportion(n, list(rng.dirichlet([alpha] * shards))) for n in class_counts]
        matrix = [[columns[c][s] for c in range(len(class_counts))] for s in range(shards)]
        if all(sum(row) > 0 for row in matrix):
            return matrix
    raise JobInputError(
        f"--partition dirichlet:{alpha}: {DIRICHLET_TRIES} draws left a shard empty; use fewer --shards or a larger alpha"
    )


def plan_pathological(
    class_counts: Sequence[int], shards: int, k: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """McMahan et al.: rows sorted by label are cut into shards*k equal blocks and every shard gets k
    random blocks. Returns (shard, global_lo, global_hi) ranges over the label-sorted order."""
    total = sum(class_counts)
    sizes = apportion(total, [1.0] * (shards * k))
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    perm = rng.permutation(shards * k)
    return sorted((i // k, int(bounds[b]), int(bounds[b + 1])) for i, b in enumerate(perm))


def matrix_ranges(matrix: list[list[int]], base: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """(class, lo, hi, shard) rank ranges from counts [shard][class]; class c's ranks start at base[c]."""
    ranges = []
    for c in range(len(base)):
        lo = base[c]
        for s, row in enumerate(matrix):
            if row[c]:
                ranges.append((c, lo, lo + row[c], s))
                lo += row[c]
    return ranges


def blocks_to_ranges(
    blocks: list[tuple[int, int, int]], counts: Sequence[int], base: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """Cut (shard, global_lo, global_hi) blocks of the label-sorted order at class boundaries."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    ranges = []
    for shard, glo, ghi in blocks:
        for c in range(len(counts)):
            lo, hi = max(glo, offsets[c]), min(ghi, offsets[c + 1])
            if lo < hi:
                ranges.append((c, base[c] + lo - int(offsets[c]), base[c] + hi - int(offsets[c]), shard))
    return ranges


@dataclass
class Plan:
    ranges: list[tuple[int, int, int, str, int]]
    """(class, lo, hi, split, shard): rows of class ``class`` whose in-class rank is in [lo, hi)."""
    shards_per_split: dict[str, int]
    expected: dict[tuple[str, int], list[int]]
    """Planned label histogram per (split, shard)."""


def make_plan(
    class_counts: Sequence[int],
    fractions: Mapping[str, float],
    partition: Partition,
    shards: int,
    partition_splits: Sequence[str],
    seed: int,
) -> Plan:
    per_split = split_counts(class_counts, fractions)
    rng = np.random.default_rng(seed)
    base = [0] * len(class_counts)
    ranges: list[tuple[int, int, int, str, int]] = []
    shards_per_split: dict[str, int] = {}
    expected: dict[tuple[str, int], list[int]] = {}
    for name, counts in per_split.items():
        rows = sum(counts)
        if rows == 0:
            raise JobInputError(
                f"--split {name}={fractions[name]:g}: gives no rows; raise the fraction or drop the split"
            )
        n = shards if name in partition_splits else 1
        blocks = n * (partition.k or 1) if partition.name == "pathological" and n > 1 else n
        if blocks > rows:
            raise JobInputError(
                f"--shards {shards}: split {name!r} has only {rows} rows for {blocks} "
                f"{'blocks' if blocks != n else 'shards'}; use fewer shards"
            )
        if n == 1 or partition.name == "iid":
            split_ranges = matrix_ranges(plan_iid(counts, n), base)
        elif partition.name == "dirichlet":
            assert partition.alpha is not None
            split_ranges = matrix_ranges(plan_dirichlet(counts, n, partition.alpha, rng), base)
        else:
            assert partition.k is not None
            split_ranges = blocks_to_ranges(plan_pathological(counts, n, partition.k, rng), counts, base)
        for c, lo, hi, s in split_ranges:
            ranges.append((int(c), int(lo), int(hi), name, int(s)))
            expected.setdefault((name, int(s)), [0] * len(class_counts))[int(c)] += int(hi - lo)
        shards_per_split[name] = n
        base = [b + n_c for b, n_c in zip(base, counts, strict=True)]
    return Plan(ranges, shards_per_split, expected)


def distribution_distances(histograms: Sequence[Sequence[int]]) -> dict[str, float]:
    """Mean total-variation and Jensen-Shannon (base 2) distance of shard label distributions to the
    pooled distribution: 0 for identical class mixes, up to 1 for disjoint ones."""
    h = np.asarray(histograms, dtype=float)
    pooled = h.sum(axis=0) / h.sum()
    shard_p = h / h.sum(axis=1, keepdims=True)
    tv = 0.5 * np.abs(shard_p - pooled).sum(axis=1)

    def kl(p: np.ndarray, q: np.ndarray) -> float:
        mask = p > 0
        return float((p[mask] * np.log2(p[mask] / q[mask])).sum())

    js = [0.5 * kl(p, (p + pooled) / 2) + 0.5 * kl(pooled, (p + pooled) / 2) for p in shard_p]
    return {"mean_tv": round(float(tv.mean()), 6), "mean_js": round(float(np.mean(js)), 6)}
