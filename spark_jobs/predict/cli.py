"""``spark-collab predict``: batch predictions of a trained classifier with ``predict_batch_udf``.

Reads image shards from ``spark-collab shard`` (a shards dir and a split) or any Parquet with a
features column, predicts every row in the executors with the model of a ``train`` or ``collab``
run (loaded once per Python worker), and writes Parquet rows (id, label when present, prediction,
class probabilities) plus a report (accuracy, per-class precision and recall, confusion matrix).
With a GPT run, each document (text, or token shards from ``corpus``) gets its token count, loss
and perplexity instead, or with ``--generate`` each text is a prompt and gets a sampled completion.

Examples::

    spark-collab predict --run runs/train/cnn --input runs/shards/mnist-t10k --output runs/predict/cnn
    spark-collab predict --run runs/collab/dml --input runs/shards/digits-iid --fusion average --output runs/predict/avg
    spark-collab predict --run runs/train/mlp --input data/rows.parquet --features-col pixels --output out/p
    spark-submit spark_jobs/predict/__main__.py --run /shared/runs/cnn --input /shared/shards/t10k --output /shared/p
    spark-collab predict --run runs/train/gpt_char --input data/plays.jsonl --output runs/predict/lm
    spark-collab predict --run runs/train/gpt_char --input runs/corpus/shakespeare_char --split val --output out/v
    spark-collab predict --run runs/train/gpt_char --input prompts.jsonl --generate --output out/g

Rows whose features are null, of the wrong length, or hold a null or NaN are malformed: by default
(``--bad-rows null``) they are written with a null prediction and counted in the report, with
their first ids; ``--bad-rows fail`` stops the job instead (exit 2, nothing written) naming them.

This module is the thin command line on the driver: flags to :class:`~spark_jobs.predict.api.PredictOptions`
(parsed and checked once), the session, one summary line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from spark_jobs.common.cli import HelpFormatter, absolute_path, run_cli
from spark_jobs.common.session import add_spark_arguments, job_session_in_background
from spark_jobs.predict.api import (
    BAD_ROWS,
    PredictOptions,
    PredictSummary,
    check_classifier_options,
    check_options,
    field_docs,
    is_language_model,
)


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`PredictOptions` field (its docstring is the help), plus the Spark flags."""
    parser = argparse.ArgumentParser(
        prog="spark-collab predict",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    doc = field_docs()
    parser.add_argument("--run", required=True, help=doc["run"])
    parser.add_argument("--input", required=True, help=doc["input"])
    parser.add_argument("--output", required=True, help=doc["output"])
    parser.add_argument("--fusion", default=None, help=doc["fusion"])
    parser.add_argument("--split", default="test", help=doc["split"])
    parser.add_argument("--features-col", default="features", help=doc["features_col"])
    parser.add_argument("--id-col", default="id", help=doc["id_col"])
    parser.add_argument("--label-col", default="label", help=doc["label_col"])
    parser.add_argument("--text-col", default="text", help=doc["text_col"])
    parser.add_argument("--batch-size", type=int, default=0, help=doc["batch_size"])
    parser.add_argument("--bad-rows", choices=BAD_ROWS, default="null", help=doc["bad_rows"])
    parser.add_argument("--partitions", type=int, default=0, help=doc["partitions"])
    parser.add_argument("--overwrite", action="store_true", help=doc["overwrite"])
    parser.add_argument("--ship-model", action="store_true", help=doc["ship_model"])
    parser.add_argument("--load-log", default=None, metavar="FILE", help=doc["load_log"])
    parser.add_argument("--generate", action="store_true", help=doc["generate"])
    # No argparse default: the field docs name the defaults, and an absent flag must stay
    # distinguishable from one given without --generate (which is refused).
    sampling = {"default": argparse.SUPPRESS}
    parser.add_argument("--max-new-tokens", type=int, help=doc["max_new_tokens"], **sampling)
    parser.add_argument("--temperature", type=float, help=doc["temperature"], **sampling)
    parser.add_argument("--top-k", type=int, help=doc["top_k"], **sampling)
    parser.add_argument("--seed", type=int, help=doc["seed"], **sampling)
    add_spark_arguments(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> PredictOptions:
    """The checked options; paths made absolute, since executors may run in another directory."""
    opts = PredictOptions(
        run=absolute_path(args.run),
        input=args.input if "://" in args.input else absolute_path(args.input),
        output=args.output,
        fusion=args.fusion,
        split=args.split,
        features_col=args.features_col,
        id_col=args.id_col,
        label_col=args.label_col,
        text_col=args.text_col,
        batch_size=args.batch_size,
        bad_rows=args.bad_rows,
        partitions=args.partitions,
        overwrite=args.overwrite,
        ship_model=args.ship_model,
        load_log=absolute_path(args.load_log) if args.load_log else None,
        generate=args.generate,
        max_new_tokens=getattr(args, "max_new_tokens", None),
        temperature=getattr(args, "temperature", None),
        top_k=getattr(args, "top_k", None),
        seed=getattr(args, "seed", None),
    )
    check_options(opts)
    return opts


def summary_line(summary: PredictSummary, language_model: bool) -> str:
    """The one line a finished job prints."""
    if summary.generated:
        return (
            f"predict: {summary.rows} prompts ({summary.bad_rows} malformed, null) completed with "
            f"{summary.model}; {summary.seconds:.1f}s -> {summary.output}"
        )
    if language_model:
        return (
            f"predict: {summary.rows} documents ({summary.bad_rows} malformed, null) with {summary.model}; "
            f"corpus perplexity {summary.corpus_perplexity}; {summary.seconds:.1f}s -> {summary.output}"
        )
    acc = "n/a" if summary.accuracy is None else f"{summary.accuracy:.4f}"
    return (
        f"predict: {summary.rows} rows ({summary.bad_rows} malformed, null) with {summary.model}; "
        f"accuracy {acc}; {summary.seconds:.1f}s -> {summary.output}"
    )


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    with job_session_in_background("spark-collab predict", args) as wait_for_spark:
        # The model loads (and torch imports) while the JVM starts.
        language_model = is_language_model(opts)
        if language_model:
            from spark_jobs.predict.lm import load_language_model, predict_language_model

            lm = load_language_model(opts)
            spark = wait_for_spark()
            spark.sparkContext.setLocalProperty("callSite.short", "spark-collab predict (LM)")
            summary = predict_language_model(spark, opts, lm)
        else:
            from spark_jobs.predict.images import load_model, predict_images

            check_classifier_options(opts)

            classifier = load_model(opts)
            spark = wait_for_spark()
            spark.sparkContext.setLocalProperty("callSite.short", "spark-collab predict")
            summary = predict_images(spark, opts, classifier)
    print(summary_line(summary, language_model))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-collab predict ...``: exit 0, 2 for the user's mistakes (one ``error:`` line), 1 for failures."""
    return run_cli(_run, argv)
