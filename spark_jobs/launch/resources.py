"""How many torch ranks Spark offers: ``launch.num_processes = "auto"``, and the GPU pre-check.

Driver side. The rules follow what TorchDistributor itself needs to start the ranks:

- CPU, local mode (ranks on the driver machine): the driver's cores as Spark counts them,
  ``sc.defaultParallelism`` under a ``local[N]`` / ``local[*]`` master (N, or every core), else
  the cores this process may run on.
- CPU, distributed mode (one barrier task per rank): the task slots of the cluster's executors
  (executor cores / ``spark.task.cpus``), as Spark counts them for barrier stages.
- GPU, local mode: the driver's GPUs, ``spark.driver.resource.gpu.amount``.
- GPU, distributed mode: one rank per executor GPU (executors x ``spark.executor.resource.gpu.amount``);
  TorchDistributor then runs ``spark.task.resource.gpu.amount`` ranks per task.

When GPUs are asked for and Spark offers none, :func:`check_gpus_offered` raises one line naming
the Spark settings to set.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from spark_jobs.common.errors import JobInputError

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

LOCAL_GPU_SETTINGS = "spark.driver.resource.gpu.amount and spark.driver.resource.gpu.discoveryScript"
CLUSTER_GPU_SETTINGS = (
    "spark.executor.resource.gpu.amount, spark.executor.resource.gpu.discoveryScript and "
    "spark.task.resource.gpu.amount"
)


def _conf_number(sc: SparkContext, key: str) -> float:
    try:
        return float(sc.getConf().get(key, "0") or 0)
    except ValueError:
        return 0.0


def _executor_count(sc: SparkContext) -> int:
    """Executors registered now (the driver's own entry left out)."""
    return max(int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1, 0)  # type: ignore[union-attr]


def _task_slots(sc: SparkContext) -> int:
    """Tasks the cluster can run at once, as Spark counts them before it starts a barrier stage."""
    jsc = sc._jsc.sc()  # type: ignore[union-attr]
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    return int(jsc.maxNumConcurrentTasks(profile))


def check_gpus_offered(spark: SparkSession, local_mode: bool) -> None:
    """Raise one :class:`JobInputError` line when ``launch.use_gpu`` has no GPU to run on."""
    sc = spark.sparkContext
    if local_mode:
        if "gpu" not in sc.resources or _conf_number(sc, "spark.driver.resource.gpu.amount") < 1:
            raise JobInputError(
                "launch.use_gpu=true but the Spark driver has no GPU resources; set "
                f"{LOCAL_GPU_SETTINGS} (--conf key=value), or set launch.use_gpu=false"
            )
        return
    if (
        _conf_number(sc, "spark.task.resource.gpu.amount") <= 0
        or _conf_number(sc, "spark.executor.resource.gpu.amount") < 1
    ):
        raise JobInputError(
            f"launch.use_gpu=true but Spark assigns no GPUs to tasks; set {CLUSTER_GPU_SETTINGS} "
            "(--conf key=value), or set launch.use_gpu=false"
        )


def offered_processes(spark: SparkSession, local_mode: bool, use_gpu: bool) -> int:
    """The number of torch ranks that ``launch.num_processes = "auto"`` stands for here (>= 1)."""
    sc = spark.sparkContext
    if use_gpu:
        check_gpus_offered(spark, local_mode)
        if local_mode:
            return int(_conf_number(sc, "spark.driver.resource.gpu.amount"))
        per_executor = int(_conf_number(sc, "spark.executor.resource.gpu.amount"))
        return max(_executor_count(sc) * per_executor, 1)
    if local_mode:
        if sc.master.startswith("local"):
            return max(int(sc.defaultParallelism), 1)
        return len(os.sched_getaffinity(0))
    return max(_task_slots(sc), 1)
