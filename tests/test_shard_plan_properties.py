"""Planning of the shard job on generated class counts (hypothesis): every row lands in exactly one shard."""

from __future__ import annotations

import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.options import parse_partition
from spark_jobs.shard.plan import make_plan

hypothesis = pytest.importorskip("hypothesis")
given, settings, st = hypothesis.given, hypothesis.settings, hypothesis.strategies


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6).filter(lambda c: sum(c) >= 12),
    shards=st.integers(1, 4),
    partition=st.sampled_from(["iid", "dirichlet:0.3", "dirichlet:5", "pathological:1", "pathological:3"]),
    seed=st.integers(0, 3),
)
def test_plan_property_every_row_once(counts: list[int], shards: int, partition: str, seed: int) -> None:
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    try:
        plan = make_plan(counts, fractions, parse_partition(partition), shards, ["train"], seed)
    except JobInputError as exc:  # a split too small for its shards/blocks is refused, not mangled
        assert "no rows" in str(exc) or "fewer shards" in str(exc)
        return
    for c, n in enumerate(counts):
        covered = sorted(r for cls, lo, hi, _, _ in plan.ranges if cls == c for r in range(lo, hi))
        assert covered == list(range(n))
    for split, n_shards in plan.shards_per_split.items():
        sizes = [sum(plan.expected[(split, s)]) for s in range(n_shards)]
        assert all(size > 0 for size in sizes)
        if partition == "iid" or n_shards == 1:
            assert max(sizes) - min(sizes) <= 1
