"""``spark-collab predict --generate``: every input text is a prompt and gets a sampled completion.

Runs on the driver; the sampling runs in Spark's Python workers
(:func:`spark_jobs.predict.worker.make_generate_fn`, the model loaded once per worker) through
:func:`training.lm_sample.sample_ids`, the code ``spark-collab generate`` samples with.

A row's completion depends only on the run, its prompt, the settings and its id: the row with id
``i`` samples from its own ``torch.Generator`` seeded with
:func:`training.lm_sample.row_seed` ``(seed, i)``, so the output is the same at any partitioning
(when the ids are: generated ids of text files without an id column depend on the partitioning).

Output: Parquet rows ``id, prompt, completion, new_tokens`` (the completion alone, decoded) and
``report.json`` with the row count and the settings. A null prompt, or one the tokenizer cannot
encode, gets a null completion and is counted (``--bad-rows fail``: the job's one-line error).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.output import staged_output
from spark_jobs.predict.api import PredictOptions, PredictSummary
from spark_jobs.predict.report import PREDICTIONS_DIR, REPORT
from spark_jobs.predict.tally import WrittenTally, tally_written

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from training.inference import LanguageModel


def completions_frame(
    prompts: DataFrame, lm: LanguageModel, opts: PredictOptions, torch_threads: int
) -> DataFrame:
    """Every prompt once: id, prompt, completion, new_tokens (null for malformed prompts)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from spark_jobs.predict.worker import GenerateSpec, make_generate_fn

    settings = opts.generation()
    spec = GenerateSpec(
        run_dir=opts.run,
        tokenizer_json=lm.tokenizer.to_json(),
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        seed=settings.seed,
        torch_threads=torch_threads,
        load_log=opts.load_log,
    )
    udf = predict_batch_udf(
        make_generate_fn(spec),
        return_type=StructType(
            [StructField("completion", StringType()), StructField("new_tokens", LongType())]
        ),
        batch_size=opts.documents_per_call(),
    )
    well_formed = F.col("text").isNotNull() & F.col("id").isNotNull()
    sampled = prompts.where(well_formed).select("id", "text", udf("id", "text").alias("c"))
    encoded = F.col("c.new_tokens") >= 0
    sampled = sampled.select(
        "id",
        F.col("text").alias("prompt"),
        F.when(encoded, F.col("c.completion")).alias("completion"),
        F.when(encoded, F.col("c.new_tokens")).alias("new_tokens"),
    )
    nulls = prompts.where(~well_formed).select(
        "id",
        F.col("text").alias("prompt"),
        F.lit(None).cast("string").alias("completion"),
        F.lit(None).cast("long").alias("new_tokens"),
    )
    return sampled.unionByName(nulls)


def write_report(
    staging: Path, opts: PredictOptions, lm: LanguageModel, counts: WrittenTally
) -> dict[str, Any]:
    """report.json from the tally of the written completions."""
    from contracts.atomic import write_json_atomic

    report = {
        "run": opts.run,
        "model": lm.description,
        "input": opts.input,
        "generate": asdict(opts.generation()),
        "rows": counts.rows,
        "bad_rows": counts.bad_rows,
        "bad_row_ids": counts.bad_row_ids,
    }
    write_json_atomic(staging / REPORT, report)
    return report


def complete(spark: SparkSession, opts: PredictOptions, lm: LanguageModel) -> PredictSummary:
    """Complete every text of ``opts.input`` (JSONL, Parquet or text files) with the GPT run ``lm``."""
    from spark_jobs.predict.lm import read_documents, refuse_bad_rows

    t0 = time.time()
    torch_threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    with staged_output(opts.output, opts.overwrite, inputs=[opts.input, opts.run]) as staging:
        prompts = read_documents(spark, opts)
        if opts.partitions:
            prompts = prompts.repartition(opts.partitions)
        staging.mkdir(parents=True)
        completions_frame(prompts, lm, opts, torch_threads).write.parquet(str(staging / PREDICTIONS_DIR))
        counts = tally_written(spark, staging / PREDICTIONS_DIR, "completion")
        refuse_bad_rows(counts, opts, "prompts")
        report = write_report(staging, opts, lm, counts)
    return PredictSummary(
        rows=report["rows"],
        bad_rows=report["bad_rows"],
        accuracy=None,
        model=lm.description,
        output=str(Path(opts.output).absolute()),
        seconds=time.time() - t0,
        generated=True,
    )
