"""``spark-collab predict`` and ``spark-collab generate``: inference with a finished run.

Typed API: ``predict(spark, PredictOptions(run=..., input=..., output=...))`` returns a
``PredictSummary``; command lines: :func:`spark_jobs.predict.cli.main` and
:func:`spark_jobs.predict.generate.main`.

Modules, by concern:

- :mod:`~spark_jobs.predict.api`: the options, the summary and :func:`predict` (driver);
- :mod:`~spark_jobs.predict.cli`: the ``spark-collab predict`` command line (driver);
- :mod:`~spark_jobs.predict.images`: classifier runs, one prediction per row (driver);
- :mod:`~spark_jobs.predict.lm`: GPT runs, one loss and perplexity per document (driver);
- :mod:`~spark_jobs.predict.lm_shards`: GPT runs, token shards from ``corpus`` as input (driver);
- :mod:`~spark_jobs.predict.lm_generate`: GPT runs, ``--generate``: a completion per prompt (driver);
- :mod:`~spark_jobs.predict.worker`: **runs in Spark's Python workers**; loads the model once per
  worker for ``predict_batch_udf``;
- :mod:`~spark_jobs.predict.report`: accuracy, precision, recall, confusion matrix (driver, no pyspark);
- :mod:`~spark_jobs.predict.generate`: ``spark-collab generate``, sampling text from a GPT run
  in one process (no Spark).

The names above are imported on first use, not here: Spark's Python workers import
:mod:`~spark_jobs.predict.worker`, which runs this file first, and they need none of the driver side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_jobs.predict.api import PredictOptions, PredictSummary, predict
    from spark_jobs.predict.cli import main

_EXPORTS = {
    "PredictOptions": "spark_jobs.predict.api",
    "PredictSummary": "spark_jobs.predict.api",
    "predict": "spark_jobs.predict.api",
    "main": "spark_jobs.predict.cli",
}

__all__ = ["PredictOptions", "PredictSummary", "main", "predict"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
