"""The shard job: a data set to train/val/test splits and one Parquet shard per rank (``spark-collab shard``).

Typed API: ``run_shard(spark, ShardOptions(output=..., ...)) -> ShardResult``; command line: :func:`main`.
Everything runs on the driver except the functions shipped to Spark's Python workers: the shard
writer (writer.py) and the row cutter of driver-side sources (``arrays_to_dataframe`` in sources.py).
"""

from spark_jobs.shard.cli import main
from spark_jobs.shard.job import ShardResult, open_source, run_shard
from spark_jobs.shard.options import Normalization, Partition, ShardOptions
from spark_jobs.shard.sources import TableOptions

__all__ = [
    "Normalization",
    "Partition",
    "ShardOptions",
    "ShardResult",
    "TableOptions",
    "main",
    "open_source",
    "run_shard",
]
