"""``spark-collab collab``: collaborative training (DML, FedAvg/FedProx, local SGD) launched by TorchDistributor.

Thin entry point: read the config, check the inputs, start Spark, launch ``training.collab.main``
on ``launch.num_processes`` ranks (one peer or one group of clients per rank), write result.json,
metrics.jsonl and plots into ``run.dir``; the ranks add a checkpoint per round, which a restart
resumes from. ``--compare`` runs the paired comparison arms over several seeds (independent vs
DML; FedAvg on IID vs pathological vs dirichlet:0.1 shards vs centralized).

Examples::

    spark-collab shard --source digits --output runs/shards/digits-iid --shards 4 --split train=0.75,test=0.25
    spark-collab collab --config conf/collab/dml.toml
    spark-collab collab --config conf/collab/fedavg.toml --set collab.fraction=0.5 --set run.dir=runs/collab/c05
    spark-collab collab --compare --source digits --seeds 3 --output runs/collab/compare
    spark-submit spark_jobs/collab/__main__.py --config conf/collab/dml.toml --set launch.local_mode=false
    spark-collab collab --config conf/collab/gpt_diloco.toml      # GPT peers: spark_jobs/collab/gpt.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.common.cli import (
    HelpFormatter,
    add_config_arguments,
    check_run_dir_overlap,
    run_cli,
    with_absolute_paths,
)
from spark_jobs.common.errors import EXIT_FAILURE, JobInputError
from spark_jobs.common.output import staged_output
from spark_jobs.common.preflight import check_model_fits, check_test_matches_train
from spark_jobs.common.session import add_spark_arguments, job_session, job_session_in_background
from spark_jobs.common.wording import plural
from spark_jobs.launch.staged_run import LaunchFailed, launch_in, launch_run, staged_run_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from training.config import TrainConfig

DEFAULT_COMPARE_CONFIG = "conf/collab/compare.toml"
# The three ways of cutting the training data into clients that the comparison puts side by side.
COMPARE_PARTITIONS = (("iid", "iid"), ("pathological", "pathological:2"), ("dirichlet0.1", "dirichlet:0.1"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-collab collab",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
    )
    add_config_arguments(
        parser,
        config_help=f"collab config (TOML), e.g. conf/collab/dml.toml (--compare: {DEFAULT_COMPARE_CONFIG})",
        set_example="--set collab.weight=0 --set train.epochs=3",
        overwrite_help="replace an existing run.dir (or --compare --output)",
    )
    cmp = parser.add_argument_group("comparison (--compare)")
    cmp.add_argument(
        "--compare", action="store_true", help="run the paired comparison arms over several seeds"
    )
    cmp.add_argument(
        "--source", default="digits", help="data source sharded for the comparison (digits, mnist5k, ...)"
    )
    cmp.add_argument("--clients", type=int, default=4, help="FedAvg clients (shards) spread over the ranks")
    cmp.add_argument(
        "--seeds", type=int, default=3, help="seeds per arm (0 .. N-1); DML arms are paired per seed"
    )
    cmp.add_argument("--output", default="runs/collab/compare", help="comparison output directory")
    cmp.add_argument("--at-round", type=int, default=3, help="also report FedAvg accuracy at this round")
    add_spark_arguments(parser)
    return parser


def _load(config: str | None, overrides: Sequence[str]) -> TrainConfig:
    from training.config import load_config, validate

    try:
        cfg = load_config(config, overrides, check=False)
        if cfg.collab is not None:
            validate(cfg)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None
    if cfg.collab is None:
        raise JobInputError(
            f"--config {config}: no [collab] section; collaborative runs need one (see conf/collab/dml.toml), "
            "or use `spark-collab train` for plain data-parallel training"
        )
    return cfg


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Everything that can be checked before Spark starts; returns cfg with absolute paths.

    Refuses ``fusion = "average"`` for peers that do not share an init or an architecture here,
    before any training, with the same reason the rank side would give after it.
    """
    from contracts.manifest import Manifest

    c = cfg.collab
    assert c is not None
    cfg = with_absolute_paths(cfg)
    try:
        manifest = Manifest.read(cfg.data.shards, kind="images")
        test_manifest = Manifest.read(cfg.data.test, kind="images") if cfg.data.test else manifest
    except ValueError as exc:
        raise JobInputError(f"data.shards/data.test: {exc}") from None
    if cfg.data.test:
        check_test_matches_train(cfg, manifest, test_manifest)
    if not test_manifest.has_split(cfg.data.test_split):
        raise JobInputError(
            f"data.test_split: {cfg.data.test or cfg.data.shards} has no {cfg.data.test_split!r} split "
            f"(it has {', '.join(test_manifest.splits)}); re-shard with --split train=0.75,test=0.25 or set data.test"
        )
    if not manifest.has_split(cfg.data.train_split):
        raise JobInputError(f"data.train_split: {cfg.data.shards} has no {cfg.data.train_split!r} split")
    k = manifest.num_shards(cfg.data.train_split)
    n = cfg.launch.num_processes
    if c.weight < 0:
        raise JobInputError("collab.weight: must be >= 0 (0 = independent peers, the paired baseline)")
    if c.sync_steps < 0:
        raise JobInputError("collab.sync_steps: must be >= 0 (0 = average every collab.local_epochs epochs)")
    if c.mode == "dml" and len(c.peers) > n:
        raise JobInputError(
            f"collab.peers lists {len(c.peers)} models for launch.num_processes={n} (one peer per rank); "
            f"--set launch.num_processes={len(c.peers)} or shorten collab.peers"
        )
    if k == 0:
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has no {cfg.data.train_split!r} rows to train on; re-shard it "
            f"with a {cfg.data.train_split} split, e.g. --split train=0.75,test=0.25"
        )
    if c.mode in ("fedavg", "local_sgd") and k < n:
        raise JobInputError(
            f"data.shards: {cfg.data.shards} has {plural(k, 'shard')} (clients) in {cfg.data.train_split!r} for "
            f"launch.num_processes={n}; re-shard with --shards {n} or more, or --set launch.num_processes={k}"
        )
    if c.mode == "dml" and c.fusion == "average":
        archs = {c.peers[r % len(c.peers)] if c.peers else cfg.model.name for r in range(n)}
        if len(archs) > 1:
            raise JobInputError(
                f"collab.fusion = 'average' refused: peers have different architectures ({', '.join(sorted(archs))}); "
                "only fusion = 'ensemble' can fuse them"
            )
        if not c.same_init and n > 1:
            raise JobInputError(
                "collab.fusion = 'average' refused: the peers start from different initialisations "
                "(collab.same_init = false), and averaging the parameters of independently initialised networks "
                "collapses accuracy (their hidden units are permuted); use fusion = 'ensemble' or set collab.same_init = true"
            )
    check_model_fits(cfg, manifest, c.peers, check_checkpoint=False)
    return cfg


def _run_one(args: argparse.Namespace) -> int:
    from training import tracking
    from training.collab_report import progress_lines, step_key, summary_line, write_run
    from training.config import describe

    if args.describe:  # also without --config: shows every key, [collab] included
        from training.config import load_config

        try:
            print(describe(load_config(args.config, args.set)))
        except ValueError as exc:
            raise JobInputError(str(exc)) from None
        return 0
    t0 = time.time()
    # The JVM starts while the config loads and is checked (which imports torch).
    with job_session_in_background("spark-collab collab", args) as wait_for_spark:
        cfg = _load(args.config, args.set)
        check_run_dir_overlap(cfg, args)
        cfg = check_config(cfg)
        inputs = [cfg.data.shards, cfg.data.test, args.config or "", args.spark_defaults]
        with staged_run_dir(
            cfg.run.dir, overwrite=args.overwrite, resume=cfg.run.resume, inputs=inputs
        ) as staging:
            spark = wait_for_spark()
            spark.sparkContext.setLocalProperty("callSite.short", f"spark-collab collab {cfg.collab.mode}")
            restarts: list = []
            result = launch_run("training.collab:main", cfg, staging, restarts)
            extra = {
                "config": cfg.to_dict(),
                "timings": {"wall_s": time.time() - t0, "train_s": result["train_s"]},
            }
            if restarts:
                from spark_jobs.launch.restarts import restart_entries

                extra["restarts"] = restart_entries(restarts)
            write_run(staging, result, extra)
    # The driver writes a collab run's files, so the driver (not a rank) logs it when run.tracking asks.
    tracking.log_finished_run(cfg, cfg.run.dir, result["history"], step_key(result), kind="collab")
    for line in progress_lines(result):
        print(line)
    print(f"{summary_line(result)}; results in {cfg.run.dir}")
    return 0


# ----------------------------------------------------------------------------------------------
# --compare
# ----------------------------------------------------------------------------------------------


def compare_configs(
    base: TrainConfig, shards: dict[str, str], seeds: int
) -> tuple[dict[str, list[TrainConfig]], dict[str, list[TrainConfig]]]:
    """The arms: ``(multi-rank arms, single-rank arms)``, each ``{arm: [config per seed]}``.

    Paired by construction: for a given seed the independent and DML arms share inits and batch
    order, and the FedAvg arms share the global init and client selection.
    """
    c = base.collab
    assert c is not None

    def variant(seed: int, shards_dir: str, **collab: Any) -> TrainConfig:
        cfg = dataclasses.replace(base)
        cfg.train = dataclasses.replace(base.train, seed=seed)
        cfg.data = dataclasses.replace(base.data, shards=shards_dir, test="")
        cfg.collab = dataclasses.replace(c, **collab)
        return cfg

    weight = c.weight if c.weight > 0 else 1.0
    multi: dict[str, list[TrainConfig]] = {
        "independent": [
            variant(s, shards["iid"], mode="dml", weight=0.0, fusion="ensemble") for s in range(seeds)
        ],
        f"dml(weight={weight:g})": [
            variant(s, shards["iid"], mode="dml", weight=weight, fusion="ensemble") for s in range(seeds)
        ],
    }
    for name, _ in COMPARE_PARTITIONS:
        multi[f"fedavg-{name}"] = [variant(s, shards[name], mode="fedavg") for s in range(seeds)]
    central = []
    for s in range(seeds):
        cfg = variant(s, shards["iid"], mode="dml", weight=0.0, fusion="ensemble")
        # Same number of passes over the data as a FedAvg client makes, on the union of all shards.
        cfg.train = dataclasses.replace(cfg.train, epochs=c.rounds * c.local_epochs)
        cfg.launch = dataclasses.replace(cfg.launch, num_processes=1)
        central.append(cfg)
    return multi, {"centralized": central}


def _make_shards(spark: SparkSession, args: argparse.Namespace, root: Path) -> dict[str, str]:
    from spark_jobs.shard import ShardOptions, run_shard
    from spark_jobs.shard.options import parse_fractions, parse_partition

    shards: dict[str, str] = {}
    for name, partition in COMPARE_PARTITIONS:
        try:
            options = ShardOptions(
                output=str(root / f"{args.source.replace(':', '_')}-{name}"),
                source=args.source,
                shards=args.clients,
                partition=parse_partition(partition),
                fractions=parse_fractions("train=0.75,test=0.25"),
                seed=0,
            )
            result = run_shard(spark, options)
        except JobInputError as exc:
            raise JobInputError(
                f"--compare: sharding --source {args.source} --partition {partition}: {exc}"
            ) from None
        print(result.summary())
        shards[name] = options.output
    return shards


def _run_compare(args: argparse.Namespace) -> int:
    from training.collab_report import format_summary, plot_compare, summarize

    base = _load(args.config or DEFAULT_COMPARE_CONFIG, args.set)
    if args.seeds < 1:
        raise JobInputError("--seeds: must be >= 1")
    if args.clients < base.launch.num_processes:
        raise JobInputError(
            f"--clients {args.clients}: need at least launch.num_processes={base.launch.num_processes}"
        )
    t0 = time.time()
    inputs = [args.config or DEFAULT_COMPARE_CONFIG, args.spark_defaults]
    with staged_output(args.output, args.overwrite, inputs=inputs) as staging:
        staging.mkdir(parents=True)
        with job_session("spark-collab collab --compare", args) as spark:
            shards = _make_shards(spark, args, staging / "shards")
            multi, single = compare_configs(base, shards, args.seeds)
            arms: dict[str, list[dict[str, Any]]] = {}
            timings: dict[str, float] = {}
            for label, group in (("multi-rank", multi), ("single-rank", single)):
                cfgs = [check_config(cfg) for cfgs in group.values() for cfg in cfgs]
                t = time.time()
                results = launch_in(
                    "training.collab:main_many",
                    cfgs,
                    cfgs[0],
                    staging,
                    what=f"--output {args.output}",
                    launch_name=f"launch-{label}",
                )
                timings[f"{label}_s"] = time.time() - t
                it = iter(results)
                for arm, arm_cfgs in group.items():
                    arms[arm] = [next(it) for _ in arm_cfgs]
        table = summarize(arms, args.at_round)
        text = format_summary(table)
        doc = {
            "source": args.source,
            "clients": args.clients,
            "seeds": args.seeds,
            "at_round": args.at_round,
            "base_config": base.to_dict(),
            "summary": table,
            "timings": {**timings, "wall_s": time.time() - t0},
            "runs": {
                arm: [{k: v for k, v in r.items() if k != "state"} for r in rs] for arm, rs in arms.items()
            },
        }
        (staging / "compare.json").write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
        (staging / "summary.txt").write_text(text + "\n")
        plot_compare(staging, arms)
    print(text)
    print(
        f"compare: {args.seeds} seeds x {len(arms)} arms in {time.time() - t0:.0f}s; results in {Path(args.output).absolute()}"
    )
    return 0


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from spark_jobs.collab.gpt import is_gpt_config, run_gpt_collab

    if not args.compare and is_gpt_config(args.config, args.set):  # DiLoCo / FedAvg / codistillation of GPTs
        return run_gpt_collab(args)
    try:
        return _run_compare(args) if args.compare else _run_one(args)
    except LaunchFailed:
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
