"""The report's tally of written predictions: counts, sums and the malformed ids, against rows
counted by hand."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spark_jobs.predict.api import SHOWN_BAD_IDS
from spark_jobs.predict.tally import tally_written


def write_rows(path: Path, ids: list[int | None], tokens: list[int | None], loss: list[float | None]) -> Path:
    path.mkdir(parents=True)
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "tokens": pa.array(tokens, pa.int64()),
            "loss_sum": pa.array(loss, pa.float64()),
        }
    )
    # Two files, so the aggregate sums over more than one task.
    half = len(ids) // 2
    pq.write_table(table.slice(0, half), path / "part-0.parquet")
    pq.write_table(table.slice(half), path / "part-1.parquet")
    return path


def test_counts_sums_and_malformed_ids(spark, tmp_path: Path) -> None:
    # Malformed rows: tokens null. Ids 9 and 2 are malformed, one malformed row has no id.
    rows = write_rows(
        tmp_path / "p",
        ids=[9, 4, None, 2, 7, 5],
        tokens=[None, 10, None, None, 3, 0],
        loss=[None, 12.5, None, None, 1.25, None],
    )
    got = tally_written(spark, rows, "tokens", sums=("tokens", "loss_sum"))
    assert got.rows == 6 and got.bad_rows == 3
    assert got.bad_row_ids == [2, 9]  # ascending; the row without an id is counted, not named
    assert got.sums == {"tokens": 13, "loss_sum": 13.75}


def test_no_malformed_rows_and_the_cap_on_named_ids(spark, tmp_path: Path) -> None:
    clean = tally_written(spark, write_rows(tmp_path / "clean", [1, 2], [4, 5], [1.0, 2.0]), "tokens")
    assert (clean.rows, clean.bad_rows, clean.bad_row_ids, clean.sums) == (2, 0, [], {})

    many = SHOWN_BAD_IDS + 5
    ids = list(range(many, 0, -1))
    bad = tally_written(
        spark, write_rows(tmp_path / "bad", ids, [None] * many, [None] * many), "tokens", ("tokens",)
    )
    assert bad.bad_rows == many and bad.bad_row_ids == list(range(1, SHOWN_BAD_IDS + 1))
    assert bad.sums == {"tokens": None}
