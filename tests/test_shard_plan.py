"""Planning arithmetic of the shard job (pure Python, no Spark)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.options import Partition, parse_fractions, parse_partition
from spark_jobs.shard.plan import apportion, distribution_distances, make_plan, plan_iid


def test_apportion_sums_and_rounds() -> None:
    assert apportion(10, [0.8, 0.1, 0.1]) == [8, 1, 1]
    assert apportion(7, [1, 1, 1]) == [3, 2, 2]
    assert apportion(0, [1, 2]) == [0, 0]
    for total in range(50):
        parts = apportion(total, [0.5, 0.3, 0.2])
        assert sum(parts) == total
        assert all(abs(p - total * w) < 1 for p, w in zip(parts, [0.5, 0.3, 0.2], strict=True))


def test_iid_matrix_sizes_and_proportions() -> None:
    counts = [13, 7, 30, 1]
    m = plan_iid(counts, 4)
    sizes = [sum(row) for row in m]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == sum(counts)
    for c, n in enumerate(counts):
        column = [row[c] for row in m]
        assert sum(column) == n and max(column) - min(column) <= 1


def _plan_hists(plan, split: str) -> np.ndarray:
    n = plan.shards_per_split[split]
    return np.array([plan.expected[(split, s)] for s in range(n)])


def test_plan_splits_are_stratified_and_ranges_disjoint() -> None:
    counts = [100, 50, 80]
    plan = make_plan(counts, {"train": 0.8, "val": 0.1, "test": 0.1}, Partition("iid"), 3, ["train"], 0)
    assert plan.shards_per_split == {"train": 3, "val": 1, "test": 1}
    assert _plan_hists(plan, "train").sum(axis=0).tolist() == [80, 40, 64]
    assert _plan_hists(plan, "val").sum(axis=0).tolist() == [10, 5, 8]
    # every in-class rank is covered exactly once
    for c, n in enumerate(counts):
        covered = sorted(r for cls, lo, hi, _, _ in plan.ranges if cls == c for r in range(lo, hi))
        assert covered == list(range(n))


@pytest.mark.parametrize("partition", ["dirichlet:0.1", "dirichlet:1.0", "pathological:2"])
def test_non_iid_plans_cover_everything(partition: str) -> None:
    counts = [60] * 10
    plan = make_plan(counts, {"train": 1.0}, parse_partition(partition), 5, ["train"], 3)
    hists = _plan_hists(plan, "train")
    assert hists.sum(axis=0).tolist() == counts
    assert (hists.sum(axis=1) > 0).all()
    if partition.startswith("pathological"):
        # 10 blocks of 60 rows = whole classes here; each shard holds exactly 2 of them
        assert ((hists > 0).sum(axis=1) == 2).all() and (hists.sum(axis=1) == 120).all()


def test_seed_changes_dirichlet_plan() -> None:
    counts = [40] * 4
    a = make_plan(counts, {"train": 1.0}, Partition("dirichlet", alpha=0.5), 3, ["train"], 1)
    b = make_plan(counts, {"train": 1.0}, Partition("dirichlet", alpha=0.5), 3, ["train"], 1)
    c = make_plan(counts, {"train": 1.0}, Partition("dirichlet", alpha=0.5), 3, ["train"], 2)
    assert a.ranges == b.ranges and a.ranges != c.ranges


def test_distances_against_hand_computed_values() -> None:
    # Two shards with disjoint classes of equal size: pooled = (1/2, 1/2), each shard is one-hot.
    d = distribution_distances([[5, 0], [0, 5]])
    assert d["mean_tv"] == pytest.approx(0.5)
    # JS(one-hot, uniform) in bits: 0.5*log2(1/0.75) + 0.5*(0.5*log2(0.5/0.75) + 0.5*log2(0.5/0.25))
    js = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert d["mean_js"] == pytest.approx(js, abs=1e-6)
    assert distribution_distances([[3, 6], [1, 2]]) == {"mean_tv": 0.0, "mean_js": 0.0}


def test_bad_options() -> None:
    for text, pattern in [
        ("train=0.8,val=0.1", "sum to 0.9"),
        ("train=0.5,dev=0.5", "NAME=FRACTION"),
        ("train=x", "not a number"),
        ("train=1.5,test=-0.5", "between 0 and 1"),
    ]:
        with pytest.raises(JobInputError, match=pattern):
            parse_fractions(text)
    assert parse_fractions("test=1") == {"test": 1.0}
    for text, pattern in [
        ("dirichlet:0", "alpha must be > 0"),
        ("dirichlet:-1", "alpha must be > 0"),
        ("dirichlet:abc", "dirichlet:ALPHA"),
        ("pathological:0", "K >= 1"),
        ("kmeans", "unknown partitioner"),
    ]:
        with pytest.raises(JobInputError, match=pattern):
            parse_partition(text)
    with pytest.raises(JobInputError, match="only 4 rows for 5 shards"):
        make_plan([2, 2], {"train": 1.0}, Partition("iid"), 5, ["train"], 0)
    with pytest.raises(JobInputError, match="gives no rows"):
        make_plan([2, 2], {"train": 0.9, "test": 0.1}, Partition("iid"), 1, ["train"], 0)


def test_evaluation_splits_partitioned_only_when_asked() -> None:
    counts = [40, 40]
    fractions = {"train": 0.5, "val": 0.5}
    plain = make_plan(counts, fractions, Partition("iid"), 4, ["train"], 0)
    both = make_plan(counts, fractions, Partition("iid"), 4, ["train", "val"], 0)
    assert plain.shards_per_split == {"train": 4, "val": 1}
    assert both.shards_per_split == {"train": 4, "val": 4}
    assert [both.expected[("val", s)] for s in range(4)] == [[5, 5]] * 4
