"""The shard job's Python API: ``run_shard(spark, ShardOptions(...)) -> ShardResult``.

Pipeline (all assignment is a function of (source, options, seed), so reruns are byte-identical):

1. The source becomes a DataFrame ``id, label, features`` (sources.py, table_sources.py).
2. Each row gets ``h = xxhash64(seed, id)``; rows are ranked by ``(h, id)`` inside their class.
3. The driver turns the per-class row counts (a few numbers, collected) into a plan (plan.py): for
   each class a list of rank ranges ``[lo, hi)`` and the (split, shard) each range goes to.
4. A broadcast range join applies the plan; features are scaled in the JVM.
5. Rows are shuffled so each (split, shard) lands in one task; the executors write their shards
   (writer.py) and return only metadata, from which the driver writes ``manifest.json``
   (manifest.py).

Everything in this module runs on the driver: it builds Spark SQL plans (their column lambdas run
in the JVM) and collects small results. The one Python function shipped to the workers is the
writer's (writer.py), plus the row cutter of driver-side sources (sources.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.common.errors import JobInputError
from spark_jobs.common.output import check_no_overlap, check_output, local_path, staged_output
from spark_jobs.common.wording import plural
from spark_jobs.shard.manifest import Scaling, build_manifest
from spark_jobs.shard.options import ShardOptions, check_options_used
from spark_jobs.shard.plan import Plan, make_plan
from spark_jobs.shard.sources import Source, load_dataframe, parse_source, release_arrays, source_paths
from spark_jobs.shard.writer import META_SCHEMA_DDL, make_writer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class ShardResult:
    """What a shard run wrote."""

    output: Path
    """The absolute output directory."""
    manifest: dict[str, Any]
    """The contents of ``output/manifest.json``."""

    def rows(self, split: str) -> int:
        return int(self.manifest["splits"][split]["rows"])

    def num_shards(self, split: str) -> int:
        return len(self.manifest["splits"][split]["shards"])

    def summary(self) -> str:
        """``wrote DIR (train: 2 shards / 4000 rows, ...)``: the line the command prints."""
        parts = ", ".join(
            f"{name}: {plural(self.num_shards(name), 'shard')} / {plural(self.rows(name), 'row')}"
            for name in self.manifest["splits"]
        )
        return f"wrote {self.output} ({parts})"


def open_source(options: ShardOptions) -> Source:
    """Parse ``options.source`` (driver-side sources are read here) and refuse options that would
    have no effect on it: everything that can be checked before Spark starts."""
    source = parse_source(options.source, options.num_classes)
    check_options_used(options, source.num_classes)
    return source


def run_shard(spark: SparkSession, options: ShardOptions, source: Source | None = None) -> ShardResult:
    """Split ``options.source`` and write one Parquet shard per rank plus manifest.json to ``options.output``.

    ``source``: the result of :func:`open_source` when the caller already has it. The output is
    staged and moved into place when complete (holding its lock); bad input raises JobInputError
    and leaves any existing output as it was.
    """
    src = source if source is not None else open_source(options)
    target = local_path(options.output)
    # Cheap refusals before any Spark work (staged_output checks again under the lock).
    check_no_overlap(target, source_paths(src), what="--source")
    check_output(target, options.overwrite)
    df, num_classes, feature_shape = load_dataframe(spark, src, options.table)
    try:
        manifest = _plan_and_write(spark, options, src, df, num_classes, feature_shape, target)
    finally:
        df.unpersist()  # table sources are cached by load_dataframe; a no-op otherwise
        release_arrays(df)  # driver-side sources travel as a broadcast; a no-op otherwise
    return ShardResult(target, manifest)


def _plan_and_write(
    spark: SparkSession,
    options: ShardOptions,
    src: Source,
    df: DataFrame,
    num_classes: int,
    feature_shape: tuple[int, ...],
    target: Path,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    if options.feature_shape:
        wanted, found = math.prod(options.feature_shape), math.prod(feature_shape)
        if wanted != found:
            raise JobInputError(
                f"--feature-shape {options.text('feature_shape')}: {wanted} values, the source has {found}"
            )
        feature_shape = options.feature_shape

    class_counts = count_classes(df, src, num_classes)
    total = sum(class_counts)
    check_options_used(options, num_classes)  # a table's number of classes is known only now
    plan = make_plan(
        class_counts,
        options.fractions,
        options.partition,
        options.shards,
        options.partition_splits,
        options.seed,
    )
    keys = [(split, s) for split in options.fractions for s in range(plan.shards_per_split[split])]

    assigned = assign(df, spark, plan, options.seed, keys)
    divide_by = options.scale if options.scale is not None else src.default_scale
    normalize = options.normalize
    mean, std = normalize.mean, normalize.std
    if normalize.mode == "global":
        if "train" not in options.fractions:
            raise JobInputError(
                "--normalize global: needs a train split to compute mean/std on; pass MEAN,STD instead"
            )
        mean, std = global_mean_std(
            scale_features(assigned.where(F.col("split") == "train"), divide_by, None, None)
        )
    scaling = Scaling(divide_by, normalize.mode, mean, std)
    scaled = scale_features(assigned, divide_by, mean, std)

    with staged_output(target, options.overwrite, inputs=source_paths(src)) as staging:
        staging.mkdir(parents=True)
        ordered = scaled.repartition(len(keys), "_key").sortWithinPartitions("_key", "id")
        metas = ordered.mapInArrow(make_writer(str(staging), keys, num_classes), META_SCHEMA_DDL).collect()
        manifest = build_manifest(
            metas, src, options, scaling, num_classes, feature_shape, class_counts, plan, keys, total
        )
        (staging / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return manifest


def count_classes(df: DataFrame, src: Source, num_classes: int) -> list[int]:
    """Rows per class: from the driver-side arrays when there are some (no Spark job), else one
    small aggregate."""
    if src.arrays is not None:
        return np.bincount(src.arrays[1], minlength=num_classes).tolist()
    class_counts = [0] * num_classes
    for row in df.groupBy("label").count().collect():
        class_counts[row["label"]] = row["count"]
    return class_counts


def assign(
    df: DataFrame, spark: SparkSession, plan: Plan, seed: int, keys: list[tuple[str, int]]
) -> DataFrame:
    """Attach split, shard and shard key to every row by ranking inside its class and joining the plan."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key_index = {k: i for i, k in enumerate(keys)}
    plan_df = spark.createDataFrame(
        [(c, lo, hi, split, shard, key_index[(split, shard)]) for c, lo, hi, split, shard in plan.ranges],
        "p_label int, lo long, hi long, split string, shard int, _key int",
    )
    ranked = df.withColumn("_h", F.xxhash64(F.lit(seed), F.col("id"))).withColumn(
        "_rank", F.row_number().over(Window.partitionBy("label").orderBy("_h", "id")) - 1
    )
    cond = (
        (ranked["label"] == plan_df["p_label"])
        & (ranked["_rank"] >= plan_df["lo"])
        & (ranked["_rank"] < plan_df["hi"])
    )
    return ranked.join(F.broadcast(plan_df), cond).select("id", "label", "features", "split", "shard", "_key")


def scale_features(df: DataFrame, divide_by: float, mean: float | None, std: float | None) -> DataFrame:
    from pyspark.sql import functions as F

    if mean is None or std is None:
        fn = lambda x: (x / F.lit(divide_by)).cast("float")  # noqa: E731
    else:
        fn = lambda x: ((x / F.lit(divide_by) - F.lit(mean)) / F.lit(std)).cast("float")  # noqa: E731
    return df.withColumn("features", F.transform("features", fn))


def global_mean_std(df: DataFrame) -> tuple[float, float]:
    """Mean and std over every feature value of the rows given (one small aggregate row)."""
    from pyspark.sql import functions as F

    per_row = df.select(
        F.aggregate("features", F.lit(0.0), lambda acc, x: acc + x).alias("s"),
        F.aggregate("features", F.lit(0.0), lambda acc, x: acc + x * x).alias("ss"),
        F.size("features").alias("n"),
    )
    row = per_row.agg(F.sum("s").alias("s"), F.sum("ss").alias("ss"), F.sum("n").alias("n")).first()
    assert row is not None
    mean = row["s"] / row["n"]
    std = math.sqrt(max(row["ss"] / row["n"] - mean * mean, 0.0))
    # Rounded so the recorded and applied values are the same short numbers on every run.
    return round(mean, 6), round(std, 6) or 1.0
