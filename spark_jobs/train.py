"""``spark-collab train``: data-parallel training (DDP/FSDP) launched by TorchDistributor.

Thin entry point: parse the config, check the inputs, start Spark, launch ``training.loop.train``
on ``launch.num_processes`` ranks, print the outcome. All training logic lives in ``training/``.

Examples::

    spark-collab shard --source mnist5k --output runs/shards/mnist5k --shards 2
    spark-collab train --config conf/train/mlp_seed.toml
    spark-collab train --config conf/train/mlp_seed.toml --set train.strategy=fsdp --set run.dir=runs/train/fsdp
    spark-submit spark_jobs/train.py --config conf/train/cnn.toml --set launch.local_mode=false
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.cli import HelpFormatter, add_config_arguments, run_cli, with_absolute_paths
from spark_jobs.errors import JobInputError
from spark_jobs.session import add_spark_arguments, job_session_in_background

if TYPE_CHECKING:
    from training.config import TrainConfig

# What a run directory may hold; --overwrite removes exactly these (never anything else).
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "result.json", "curves.png")
RUN_DIRS = ("launch",)
EXIT_RANK_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab train",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    add_config_arguments(
        parser,
        config_help="training config (TOML), e.g. conf/train/mlp_seed.toml",
        set_example="--set train.epochs=3 --set launch.num_processes=2",
        overwrite_help="replace the results of an earlier run in run.dir (without it, an existing run is refused "
        "unless run.resume=true)",
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


def _check_inputs(cfg: TrainConfig, overwrite: bool) -> tuple[TrainConfig, list[str]]:
    """The files on disk, checked before Spark starts or torch is imported, so that a wrong path is
    reported at once. Returns cfg with absolute paths, and what an earlier run left in run.dir (to
    be removed with --overwrite once the whole config is valid)."""
    from training.manifest import read_manifest

    # Ranks may run with another working directory (distributed mode): pass absolute paths.
    cfg = with_absolute_paths(cfg)
    if not cfg.data.shards:
        return cfg, []  # _validate names the key and what to set
    try:
        manifest = read_manifest(cfg.data.shards)
        if cfg.data.test:
            read_manifest(cfg.data.test)
    except ValueError as exc:
        raise JobInputError(f"data.shards/data.test: {exc}") from None
    n = len(manifest["splits"].get(cfg.data.train_split, {}).get("shards", []))
    if n < cfg.launch.num_processes:
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has {n} {cfg.data.train_split!r} shards for "
            f"launch.num_processes={cfg.launch.num_processes}; re-shard with --shards "
            f"{cfg.launch.num_processes} or --set launch.num_processes={max(n, 1)}"
        )
    run_dir = Path(cfg.run.dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise JobInputError(f"run.dir {run_dir} exists and is not a directory")
    earlier = [name for name in (*RUN_FILES, *RUN_DIRS) if (run_dir / name).exists()]
    if not earlier or cfg.run.resume:
        return cfg, []
    if not overwrite:
        raise JobInputError(
            f"run.dir {run_dir} holds an earlier run ({', '.join(earlier)}); pass --overwrite, "
            "--set run.resume=true, or another --set run.dir=..."
        )
    return cfg, earlier


def _remove_earlier_run(run_dir: Path, names: list[str]) -> None:
    import shutil

    for name in names:
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def _run(argv: Sequence[str] | None) -> int:
    t_start = time.time()
    args = build_parser().parse_args(argv)
    if args.describe:
        from training.config import describe

        print(describe(_load(args)))
        return 0
    from spark_jobs.launcher import LaunchError, launch

    cfg, earlier = _check_inputs(_load(args, check=False), args.overwrite)
    # The JVM starts while the rest of the config is checked (which imports torch).
    with job_session_in_background("spark-collab train", args) as wait_for_spark:
        cfg = _validate(cfg)
        _remove_earlier_run(Path(cfg.run.dir), earlier)
        spark = wait_for_spark()
        spark.sparkContext.setLocalProperty("callSite.short", "spark-collab train")
        try:
            result = launch(
                "training.loop:train",  # imported by the ranks only
                cfg,
                num_processes=cfg.launch.num_processes,
                local_mode=cfg.launch.local_mode,
                use_gpu=cfg.launch.use_gpu,
                timeout_s=cfg.launch.timeout_s,
                launch_dir=Path(cfg.run.dir) / "launch",
            )
        except LaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_RANK_FAILURE
    first = result["timings"].get("first_step_unix")
    test = result.get("test_accuracy")
    print(
        f"done: {result['model']} {result['strategy']} x{result['world_size']} "
        f"val_accuracy={result.get('val_accuracy')} test_accuracy={test if test is None else round(test, 4)} "
        f"samples/s={result.get('samples_per_s') or 0:.0f} "
        f"start->first step {((first or time.time()) - t_start):.1f}s; results in {cfg.run.dir}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
