"""``csv:`` and ``parquet:`` sources: read, validated and given stable row ids by Spark itself.

All of this runs on the driver, building Spark SQL plans: the column expressions (including the
lambdas given to ``F.exists``) execute in the JVM, so no Python function is shipped to the workers.
Validation is one aggregate pass whose single result row is collected.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.common.errors import JobInputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from spark_jobs.shard.sources import Source, TableOptions

# Where a CSV line whose field count differs from the header's lands (raw text; null for good lines).
MALFORMED_COL = "_malformed_line"


def table_dataframe(
    spark: SparkSession, src: Source, opts: TableOptions
) -> tuple[DataFrame, int, tuple[int, ...]]:
    """The table as ``id, label, features`` plus (num_classes, feature_shape); raises on bad data."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    where = f"--source {src.spec}"
    header_fields = 0
    try:
        if src.kind == "csv":
            inferred = spark.read.csv(str(src.path), header=True, inferSchema=True)
            header_fields = len(inferred.columns)
            # Read again with the inferred schema plus a column for malformed lines: by default Spark
            # pads a short line with nulls and silently drops the extra fields of a long one.
            raw = spark.read.csv(
                str(src.path),
                header=True,
                schema=inferred.schema.add(MALFORMED_COL, T.StringType()),
                mode="PERMISSIVE",
                columnNameOfCorruptRecord=MALFORMED_COL,
            )
        else:
            raw = spark.read.parquet(str(src.path))
    except Exception as exc:  # AnalysisException and friends: unreadable input
        raise JobInputError(f"{where}: cannot read ({str(exc).splitlines()[0]})") from None
    columns = [c for c in raw.columns if c != MALFORMED_COL]
    for name, flag in (
        (opts.label_col, "--label-col"),
        (opts.id_col, "--id-col"),
        (opts.features_col, "--features-col"),
    ):
        if name is not None and name not in columns:
            raise JobInputError(f"{where}: no column {name!r} ({flag}); columns are {', '.join(columns)}")
    if opts.features_col:
        features = F.col(opts.features_col).cast(T.ArrayType(T.FloatType()))
    else:
        feature_cols = list(opts.feature_cols) or [
            c for c in columns if c not in {opts.label_col, opts.id_col}
        ]
        missing = [c for c in feature_cols if c not in columns]
        if missing:
            raise JobInputError(
                f"{where}: no column {missing[0]!r} (--feature-cols); columns are {', '.join(columns)}"
            )
        if not feature_cols:
            raise JobInputError(f"{where}: no feature columns besides the label; pass --feature-cols")
        numeric = (T.NumericType, T.BooleanType)
        for c in feature_cols:
            if not isinstance(raw.schema[c].dataType, numeric):
                raise JobInputError(
                    f"{where}: feature column {c!r} is {raw.schema[c].dataType.simpleString()}, not numeric"
                )
        features = F.array(*[F.col(c).cast("float") for c in feature_cols])
    label_type = raw.schema[opts.label_col].dataType
    if not isinstance(label_type, T.IntegralType):
        raise JobInputError(
            f"{where}: label column {opts.label_col!r} is {label_type.simpleString()}, expected integers"
        )
    df = raw.select(
        (F.col(opts.id_col).cast("long") if opts.id_col else F.lit(None).cast("long")).alias("id"),
        F.col(opts.label_col).cast("int").alias("label"),
        features.alias("features"),
        *([F.col(MALFORMED_COL)] if header_fields else []),
    )
    if not opts.id_col:
        df = with_row_index(df)
    # The job scans the source several times (validation, class counts, writing): read it once.
    # Caching also pins the row-index ids, which come from a non-deterministic expression.
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    # One pass computes everything validation needs; the result is a single small row.
    nan_in_row = F.exists("features", lambda x: F.isnan(x) | x.isNull() | (F.abs(x) == float("inf")))
    stats = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.min("label").alias("min_label"),
        F.max("label").alias("max_label"),
        F.sum(F.col("label").isNull().cast("int")).alias("null_labels"),
        F.sum((F.col("features").isNull() | nan_in_row).cast("int")).alias("bad_features"),
        F.min(F.size("features")).alias("min_dim"),
        F.max(F.size("features")).alias("max_dim"),
        F.countDistinct("id").alias("ids"),
        F.sum(F.col("id").isNull().cast("int")).alias("null_ids"),
        F.sum(F.col(MALFORMED_COL).isNotNull().cast("int") if header_fields else F.lit(0)).alias("malformed"),
    ).first()
    assert stats is not None
    if stats["rows"] == 0:
        raise JobInputError(f"{where}: no rows")
    if stats["malformed"]:
        first = df.where(F.col(MALFORMED_COL).isNotNull()).orderBy("id").first()
        assert first is not None
        raise JobInputError(
            f"{where}: {malformed_line(src.path, first[MALFORMED_COL], header_fields)} "
            f"({stats['malformed']} such line{'s' if stats['malformed'] != 1 else ''} in all); fix the file"
        )
    if stats["null_labels"]:
        raise JobInputError(
            f"{where}: {stats['null_labels']} rows have no label in column {opts.label_col!r}"
        )
    if stats["bad_features"]:
        raise JobInputError(
            f"{where}: {stats['bad_features']} rows have NaN, infinite or missing feature values"
        )
    if stats["min_dim"] != stats["max_dim"]:
        raise JobInputError(
            f"{where}: feature vectors have lengths {stats['min_dim']}..{stats['max_dim']}; they must be equal"
        )
    if stats["null_ids"] or stats["ids"] != stats["rows"]:
        raise JobInputError(f"{where}: id column {opts.id_col!r} has missing or duplicate values")
    num_classes = src.num_classes or int(stats["max_label"]) + 1
    if stats["min_label"] < 0:
        first = df.where(F.col("label") < 0).orderBy("id").first()
        assert first is not None
        raise JobInputError(
            f"{where}: label {first['label']} in column {opts.label_col!r} at row id {first['id']}: labels must be "
            ">= 0 (class indices 0, 1, ...); fix the data, or pick the right column with --label-col"
        )
    if stats["max_label"] >= num_classes:
        raise JobInputError(
            f"{where}: label {stats['max_label']} is out of range 0..{num_classes - 1} (column "
            f"{opts.label_col!r}); pass --num-classes {stats['max_label'] + 1}"
        )
    return df, num_classes, (int(stats["min_dim"]),)


def malformed_line(path: Path | None, text: str, header_fields: int) -> str:
    """``line N of FILE has K fields, the header has M`` for the raw text of a malformed CSV line.

    Spark hands back the line's text, not its number; a local file is scanned for it (only on this
    error path), anything else is named by its text.
    """
    fields = len(next(csv.reader([text]), []))
    what = f"has {fields} field{'s' if fields != 1 else ''}, the header has {header_fields}"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path and path.is_dir() else [path]
    for file in files:
        if file is None or not file.is_file():
            continue
        with file.open(encoding="utf-8", errors="replace", newline="") as fh:
            for number, line in enumerate(fh, start=1):
                if line.rstrip("\r\n") == text:
                    return f"line {number} of {file} {what}"
    return f"the line {text[:80]!r} {what}"


def with_row_index(df: DataFrame) -> DataFrame:
    """``id`` = row position in file order, independent of how Spark splits the files.

    monotonically_increasing_id() is (partition << 33) + position-in-partition, but partitions
    are packed by size, not by file order. So count rows per (file, partition) -- a few small
    rows, collected -- order them by (file name, partition), and offset each group.
    """
    from pyspark.sql import functions as F

    tagged = (
        df.withColumn("_file", F.input_file_name())
        .withColumn("_part", F.spark_partition_id())
        .withColumn("_pos", F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1))
    )
    groups = (
        tagged.groupBy("_file", "_part")
        .agg(F.count(F.lit(1)).alias("_n"), F.min("_pos").alias("_first"))
        .collect()
    )
    offsets, running = [], 0
    for row in sorted(groups, key=lambda r: (r["_file"], r["_part"])):
        offsets.append((row["_file"], row["_part"], row["_first"], running))
        running += row["_n"]
    table = df.sparkSession.createDataFrame(offsets, "_file string, _part int, _first long, _offset long")
    joined = tagged.join(F.broadcast(table), ["_file", "_part"])
    return joined.select(
        (F.col("_offset") + F.col("_pos") - F.col("_first")).cast("long").alias("id"),
        *[c for c in df.columns if c != "id"],
    )
