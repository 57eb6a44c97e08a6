"""``spark-collab collab`` with a GPT config: DiLoCo, FedAvg, codistillation or independent GPT peers.

Reached from :mod:`spark_jobs.collab` when the config's ``model.name`` is ``"gpt"``. Thin entry
point: read and check the config and the token shards, start Spark, launch
``training.lm_collab:main`` on ``launch.num_processes`` ranks (one replica per rank), report.
The ranks write metrics.jsonl, checkpoints (at every evaluation, every mode), curves.png and
result.json into the staged ``run.dir`` (spark_jobs/launch/staged_run.py), as ``spark-collab train`` does; ``run.resume`` and
``launch.max_restarts`` continue from the newest checkpoint.

Examples::

    spark-collab corpus input.txt --output runs/corpus/shakespeare_char --tokenizer char
    spark-collab collab --config conf/collab/gpt_diloco.toml
    spark-collab collab --config conf/collab/gpt_diloco.toml --set collab.mode=fedavg --set run.dir=runs/collab/gpt_fedavg
    spark-collab collab --config conf/collab/gpt_codistill.toml
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from spark_jobs.common.cli import check_run_dir_overlap, with_absolute_paths
from spark_jobs.common.errors import EXIT_FAILURE, JobInputError
from spark_jobs.common.preflight import check_warm_start
from spark_jobs.common.session import job_session_in_background
from spark_jobs.common.wording import plural
from spark_jobs.launch.staged_run import LaunchFailed, check_run_dir, launch_run, staged_run_dir

if TYPE_CHECKING:
    from training.lm_config import GPTConfig


def is_gpt_config(config: str | None, overrides: list[str]) -> bool:
    """Whether ``--config`` (with ``--set``) selects the GPT config root; errors are left to the caller's path."""
    from training.config import load_config
    from training.lm_config import GPTConfig

    try:
        return isinstance(load_config(config, overrides, check=False), GPTConfig)
    except ValueError:
        return False


def _load(args: argparse.Namespace) -> GPTConfig:
    from training.config import load_config

    try:
        cfg = load_config(args.config, args.set)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None
    if cfg.collab is None:  # type: ignore[union-attr]
        raise JobInputError(
            f"--config {args.config}: no [collab] section; collaborative GPT runs need one "
            "(see conf/collab/gpt_diloco.toml), or use `spark-collab train` for data-parallel training"
        )
    if cfg.train.strategy != "ddp" or cfg.train.compile:  # type: ignore[union-attr]
        raise JobInputError(
            "train.strategy/train.compile: collaborative GPT runs hold one plain replica per rank and read "
            'neither; remove them (or set train.strategy = "ddp", train.compile = false)'
        )
    return cfg  # type: ignore[return-value]


def _check_inputs(cfg: GPTConfig) -> GPTConfig:
    """The token shards and the split layout the mode needs, before Spark starts. Returns absolute paths."""
    from contracts.manifest import Manifest

    cfg = with_absolute_paths(cfg)  # type: ignore[arg-type,assignment]
    c = cfg.collab
    assert c is not None
    try:
        manifest = Manifest.read(cfg.data.shards, kind="tokens")
    except ValueError as exc:
        raise JobInputError(f"data.shards: {exc}") from None
    k = manifest.num_shards(cfg.data.train_split)
    n = cfg.launch.num_processes
    if k == 0:
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has no {cfg.data.train_split!r} shards to train on"
        )
    if c.partition == "shards" and k < n:
        raise JobInputError(
            f"collab.partition = 'shards': {cfg.data.shards} has {plural(k, 'shard')} in {cfg.data.train_split!r} "
            f"for launch.num_processes={n}; re-run corpus with more shards, or use collab.partition = 'windows'"
        )
    check_warm_start(cfg, manifest)
    return cfg


def run_gpt_collab(args: argparse.Namespace) -> int:
    """The ``collab`` command for a GPT config (``args`` as parsed by spark_jobs.collab)."""
    from training.config import describe

    if args.describe:
        print(describe(_load(args)))
        return 0

    t0 = time.time()
    cfg = _check_inputs(_load(args))
    check_run_dir_overlap(cfg, args)  # type: ignore[arg-type]
    c = cfg.collab
    assert c is not None
    check_run_dir(cfg.run.dir, overwrite=args.overwrite, resume=cfg.run.resume)
    inputs = [cfg.data.shards, args.config or "", args.spark_defaults]
    with job_session_in_background("spark-collab collab", args) as wait_for_spark:
        try:
            with staged_run_dir(
                cfg.run.dir, overwrite=args.overwrite, resume=cfg.run.resume, inputs=inputs
            ) as staging:
                spark = wait_for_spark()
                spark.sparkContext.setLocalProperty("callSite.short", f"spark-collab collab gpt {c.mode}")
                result = launch_run("training.lm_collab:main", cfg, staging)
        except LaunchFailed:
            return EXIT_FAILURE
    val = result.get("val_loss")
    print(
        f"done: gpt {c.mode} x{result['world_size']} val_loss={'n/a' if val is None else f'{val:.4f}'} "
        f"sent={result['comm_bytes'] / 1e6:.1f} MB per rank in {time.time() - t0:.0f}s; results in {cfg.run.dir}"
    )
    return 0
