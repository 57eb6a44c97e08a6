"""What a ``spark-collab predict`` report needs from the rows the job wrote, read back in one pass.

Every prediction job writes its rows first and reports on what is on disk, so the report and the
Parquet output cannot disagree. Row count, malformed-row count and the sums a report needs come from
one aggregate (one small Spark job); the smallest malformed ids need a second, run only when there
are malformed rows. Runs on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.predict.api import SHOWN_BAD_IDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class WrittenTally:
    """Counts over the written rows; a row is malformed when its result column is null."""

    rows: int
    bad_rows: int
    bad_row_ids: list[int]
    """The smallest ids of malformed rows (at most SHOWN_BAD_IDS); rows without an id are not named."""
    sums: dict[str, Any]
    """Each summed column's total (None when every value is null)."""


def smallest_bad_ids(written: DataFrame, result_col: str) -> list[int]:
    """The smallest ids among the rows whose ``result_col`` is null."""
    from pyspark.sql import functions as F

    bad = written.where(F.col(result_col).isNull() & F.col("id").isNotNull())
    return [int(r[0]) for r in bad.select("id").orderBy("id").limit(SHOWN_BAD_IDS).collect()]


def tally_written(
    spark: SparkSession, predictions: Path, result_col: str, sums: tuple[str, ...] = ()
) -> WrittenTally:
    """Rows, malformed rows (``result_col`` null) and the totals of ``sums`` of the Parquet rows under
    ``predictions``."""
    from pyspark.sql import functions as F

    written = spark.read.parquet(str(predictions))
    totals = written.agg(
        F.count(F.lit(1)).alias("_rows"),
        F.count_if(F.col(result_col).isNull()).alias("_bad"),
        *(F.sum(c).alias(c) for c in sums),
    ).first()
    assert totals is not None  # a global aggregate always has one row
    bad_rows = int(totals["_bad"] or 0)
    return WrittenTally(
        rows=int(totals["_rows"]),
        bad_rows=bad_rows,
        bad_row_ids=smallest_bad_ids(written, result_col) if bad_rows else [],
        sums={c: totals[c] for c in sums},
    )
