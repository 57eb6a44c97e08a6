"""The train job: data-parallel training (DDP, FSDP2) of one model, launched by TorchDistributor.

``job.py`` is the driver (config, preflight checks, staging, launch, restarts, report); the ranks
run :mod:`training.loop` (image classifiers) or :mod:`training.lm_loop` (GPT). No code of this
package runs in Spark's Python workers: the launcher starts the ranks.
"""

from spark_jobs.train.job import main

__all__ = ["main"]
