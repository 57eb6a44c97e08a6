"""How many rows Spark puts in each Arrow batch it hands a Python worker, set for one job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


@contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int) -> Iterator[None]:
    """Run the body with ``rows`` rows per Arrow batch, then restore the session's setting.

    A task's Python worker starts on its first batch and the JVM converts the next one meanwhile, so
    a batch should be a small part of a partition: one batch per partition serializes the two.
    """
    previous = spark.conf.get(ARROW_BATCH_CONF)
    spark.conf.set(ARROW_BATCH_CONF, str(rows))
    try:
        yield
    finally:
        spark.conf.set(ARROW_BATCH_CONF, previous)
