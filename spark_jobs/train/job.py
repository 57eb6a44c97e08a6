"""``spark-collab train``: data-parallel training (DDP/FSDP) launched by TorchDistributor.

Thin entry point: parse the config, check the inputs, start Spark, launch ``training.loop.train``
on ``launch.num_processes`` ranks, print the outcome. All training logic lives in ``training/``.

Examples::

    spark-collab shard --source mnist5k --output runs/shards/mnist5k --shards 2
    spark-collab train --config conf/train/mlp784.toml
    spark-collab train --config conf/train/mlp784.toml --set train.strategy=fsdp --set run.dir=runs/train/fsdp
    spark-submit spark_jobs/train/__main__.py --config conf/train/cnn.toml --set launch.local_mode=false
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.rundir import RESULT
from spark_jobs.common.cli import (
    HelpFormatter,
    add_config_arguments,
    check_run_dir_overlap,
    run_cli,
    with_absolute_paths,
)
from spark_jobs.common.errors import EXIT_FAILURE, JobInputError
from spark_jobs.common.locks import output_lock
from spark_jobs.common.output import check_writable
from spark_jobs.common.preflight import check_model_fits, check_test_matches_train, check_warm_start
from spark_jobs.common.session import add_spark_arguments, job_session_in_background
from spark_jobs.common.wording import plural
from spark_jobs.launch.staged_run import check_run_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from training.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab train",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    add_config_arguments(
        parser,
        config_help="training config (TOML), e.g. conf/train/mlp784.toml",
        set_example="--set train.epochs=3 --set launch.num_processes=2",
        overwrite_help="replace an earlier run in run.dir once the new one has finished (without it, an earlier "
        "run is refused unless run.resume=true)",
    )
    add_spark_arguments(parser)
    return parser


def _load(args: argparse.Namespace, check: bool = True) -> TrainConfig:
    """The config; ``check=False``: TOML, keys and types only (no torch import, see _validate)."""
    from training.config import load_config

    try:
        return load_config(args.config, args.set, check=check)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None


def _validate(cfg: TrainConfig) -> TrainConfig:
    """Range and choice checks; the model-name check imports torch (about 1 s)."""
    from training.config import validate

    try:
        return validate(cfg)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None


def _is_gpt(cfg: TrainConfig) -> bool:
    """A language-model config (training.lm_config): token shards, trained by training.lm_loop."""
    return cfg.model.name == "gpt"


def _check_inputs(cfg: TrainConfig, overwrite: bool) -> TrainConfig:
    """The files on disk, checked before Spark starts or torch is imported, so that a wrong path is
    reported at once. Returns cfg with absolute paths."""
    from contracts.manifest import Manifest

    # Ranks may run with another working directory (distributed mode): pass absolute paths.
    cfg = with_absolute_paths(cfg)
    if not cfg.data.shards:
        return cfg  # _validate names the key and what to set
    try:
        manifest = Manifest.read(cfg.data.shards, kind="tokens" if _is_gpt(cfg) else "images")
        if getattr(cfg.data, "test", ""):
            check_test_matches_train(cfg, manifest, Manifest.read(cfg.data.test, kind="images"))
    except ValueError as exc:
        raise JobInputError(f"data.shards/data.test: {exc}") from None
    n = manifest.num_shards(cfg.data.train_split)
    if n == 0:
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has no {cfg.data.train_split!r} rows to train on; re-shard it "
            f"with a {cfg.data.train_split} split, e.g. --split train=0.8,val=0.1,test=0.1"
        )
    # (With launch.num_processes="auto" this check runs again once the number is known.)
    wanted = cfg.launch.num_processes
    if isinstance(wanted, int) and n < wanted and not _is_gpt(cfg):  # GPT ranks sample from every shard
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has {plural(n, 'shard')} in {cfg.data.train_split!r} for "
            f"launch.num_processes={cfg.launch.num_processes}; re-shard with --shards "
            f"{cfg.launch.num_processes} or --set launch.num_processes={n}"
        )
    check_run_dir(cfg.run.dir, overwrite=overwrite, resume=cfg.run.resume)
    return cfg


def _check_model(cfg: TrainConfig) -> None:
    """The model fits the data and, with run.resume, the checkpoint (imports torch: after _validate)."""
    from contracts.manifest import Manifest

    if getattr(cfg, "collab", None) is not None:
        raise JobInputError(
            "[collab]: `spark-collab train` does not read this section; run the config with "
            "`spark-collab collab`, or remove the section"
        )
    if _is_gpt(cfg):  # the vocabulary size is read from the token shards' manifest
        check_warm_start(cfg, Manifest.read(cfg.data.shards, kind="tokens"))  # type: ignore[arg-type]
        return
    check_model_fits(cfg, Manifest.read(cfg.data.shards, kind="images"))


def _with_offered_processes(cfg: TrainConfig, spark: SparkSession) -> TrainConfig:
    """``cfg`` with ``launch.num_processes="auto"`` replaced by what Spark offers (spark_jobs/resources.py)."""
    import dataclasses

    from spark_jobs.launch.resources import offered_processes

    n = offered_processes(spark, cfg.launch.local_mode, cfg.launch.use_gpu)
    where = "GPUs" if cfg.launch.use_gpu else "task slots"
    print(
        f"launch.num_processes=auto: {n} ranks ({where} offered by {spark.sparkContext.master})", flush=True
    )
    return dataclasses.replace(cfg, launch=dataclasses.replace(cfg.launch, num_processes=n))


def _run(argv: Sequence[str] | None) -> int:
    t_start = time.time()
    args = build_parser().parse_args(argv)
    if args.describe:
        from training.config import describe

        print(describe(_load(args)))
        return 0
    from spark_jobs.launch import RestartRecord
    from spark_jobs.launch.restarts import record_restarts
    from spark_jobs.launch.staged_run import LaunchFailed, launch_run, staged_run_dir

    cfg = _check_inputs(_load(args, check=False), args.overwrite)
    # The JVM starts while the rest of the config is checked (which imports torch).
    with job_session_in_background("spark-collab train", args) as wait_for_spark:
        if cfg.launch.num_processes == "auto":  # needs Spark: what it offers decides
            cfg = _check_inputs(_with_offered_processes(cfg, wait_for_spark()), args.overwrite)
        cfg = _validate(cfg)
        _check_model(cfg)
        spark = wait_for_spark()
        spark.sparkContext.setLocalProperty("callSite.short", "spark-collab train")
        if cfg.launch.use_gpu:
            from spark_jobs.launch.resources import check_gpus_offered

            check_gpus_offered(spark, cfg.launch.local_mode)
        restarts: list[RestartRecord] = []
        inputs = [cfg.data.shards, getattr(cfg.data, "test", ""), args.config or "", args.spark_defaults]
        try:
            with staged_run_dir(
                cfg.run.dir, overwrite=args.overwrite, resume=cfg.run.resume, inputs=inputs
            ) as staging:
                entry = "training.lm_loop:train" if _is_gpt(cfg) else "training.loop:train"
                result = launch_run(entry, cfg, staging, restarts)
                if restarts:
                    record_restarts(staging, restarts)
                    result["restarts"] = restarts
        except LaunchFailed:
            return EXIT_FAILURE
    first = result["timings"].get("first_step_unix")
    if _is_gpt(cfg):
        print(
            f"done: gpt {result['strategy']} x{result['world_size']} best_val_loss={result['best_val_loss']} "
            f"tokens/s={result.get('tokens_per_s') or 0:.0f} mfu={result.get('mfu') or 0:.4f} "
            f"start->first step {((first or time.time()) - t_start):.1f}s; results in {cfg.run.dir}"
        )
        return 0
    test = result.get("test_accuracy")
    print(
        f"done: {result['model']} {result['strategy']} x{result['world_size']} "
        f"val_accuracy={result.get('val_accuracy')} test_accuracy={test if test is None else round(test, 4)} "
        f"samples/s={result.get('samples_per_s') or 0:.0f} "
        f"start->first step {((first or time.time()) - t_start):.1f}s; results in {cfg.run.dir}"
    )
    return 0


def _run_holding_run_dir(argv: Sequence[str] | None) -> int:
    """:func:`_run` with ``run.dir`` locked for the whole command (spark_jobs/common/locks.py), so two runs
    can never both pass the check for an earlier run; a run.dir overlapping the inputs is refused first."""
    args = build_parser().parse_args(argv)
    if args.describe:
        return _run(argv)
    cfg = with_absolute_paths(_load(args, check=False))
    check_run_dir_overlap(cfg, args)
    if not cfg.run.dir:
        return _run(argv)  # validation names the key
    run_dir = Path(cfg.run.dir)
    with output_lock(run_dir, flag="run.dir"):
        check_writable(run_dir / RESULT if run_dir.is_dir() else run_dir, flag="run.dir")
        return _run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run_holding_run_dir, argv)


if __name__ == "__main__":
    sys.exit(main())
