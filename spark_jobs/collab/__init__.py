"""The collab job: several models learning together (DML, FedAvg, local SGD; for GPT: DiLoCo,
FedAvg, codistillation), then fused.

``job.py`` is the driver for image classifiers and the ``--compare`` arms, ``gpt.py`` the GPT
variant; the ranks run :mod:`training.collab` and :mod:`training.lm_collab`. No code of this package
runs in Spark's Python workers: the launcher starts the ranks.
"""

from spark_jobs.collab.job import main

__all__ = ["main"]
