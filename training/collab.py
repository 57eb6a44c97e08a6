"""Collaborative training of image classifiers on the rank side: the entry points.

One peer (DML) or one group of clients (FedAvg, local SGD) per rank. The modes live in their own
modules and share their building blocks with data-parallel training (``training.optim``):

- :mod:`training.collab_dml`: deep mutual learning, peers coupled through each other's predictions.
- :mod:`training.collab_averaging`: FedAvg / FedProx and local SGD, models averaged in rounds.
- :mod:`training.collab_common`: peer identities, seeds, evaluation, the step clock (heartbeat, faults).
- :mod:`training.collab_checkpoint`: a checkpoint per round or epoch, and resuming from it.

:func:`main` is what TorchDistributor runs on every rank for one run; :func:`main_many` runs
several configs in one process group (the comparison command).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch

from contracts.manifest import Manifest
from training.collab_averaging import hosted_clients, run_fedavg, run_local_sgd
from training.collab_dml import dml_loss, run_dml
from training.config import TrainConfig
from training.data import ShardData, load_shard, num_shards
from training.dist import DistContext, all_gather_objects, barrier, distributed
from training.fusion import init_fingerprint
from training.inference import peer_models_document
from training.loop import concat_shards

# dml_loss stays importable from here: GPT codistillation (training.lm_collab*) uses the same loss.
__all__ = ["dml_loss", "load_test", "main", "main_many", "run"]


def load_test(cfg: TrainConfig) -> ShardData:
    """The test split: ``data.test`` when set, else the training shards' test split (all shards)."""
    source = cfg.data.test or cfg.data.shards
    return load_shard(source, cfg.data.test_split, None)


def run(cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """Load this rank's data for ``collab.mode`` and run it inside an existing process group.

    The result also holds this rank's final parameters (``state``): its DML peer, or the global
    model of FedAvg / local SGD.
    """
    c = cfg.collab
    if c is None:
        raise ValueError("[collab] section missing: collaborative training needs collab.mode")
    if c.weight < 0:
        raise ValueError("collab.weight: must be >= 0 (0 = independent peers)")
    test = load_test(cfg)
    if c.mode == "dml":
        train = load_shard(cfg.data.shards, cfg.data.train_split, None)
        return run_dml(cfg, ctx, train, test)
    k = num_shards(cfg.data.shards, cfg.data.train_split)
    if k < ctx.world_size:
        raise ValueError(
            f"data.shards {cfg.data.shards} has {k} {cfg.data.train_split} shards for {ctx.world_size} ranks: "
            "every rank needs at least one client; lower launch.num_processes or re-shard with more --shards"
        )
    mine = hosted_clients(k, ctx)
    if c.mode == "fedavg":
        clients = {i: load_shard(cfg.data.shards, cfg.data.train_split, i) for i in mine}
        return run_fedavg(cfg, ctx, clients, k, test)
    parts = [load_shard(cfg.data.shards, cfg.data.train_split, i) for i in mine]
    return run_local_sgd(cfg, ctx, concat_shards(parts), test)


def _limit_cpu_threads(ctx: DistContext) -> None:
    """One intra-op thread per CPU rank unless the user set OMP_NUM_THREADS.

    torchrun sets OMP_NUM_THREADS=1 only for several local ranks; a single rank then spins
    threads over batches of a few KB. Measured on a busy 2-core machine: 5 DML epochs on digits
    took 5.5 s with one thread and 30 s with two.
    """
    if ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def main(cfg: TrainConfig) -> dict[str, Any] | None:
    """What every rank runs: join the group, train, return the result (rank 0) or None."""
    with distributed(use_gpu=cfg.launch.use_gpu, timeout_s=cfg.launch.timeout_s) as ctx:
        _limit_cpu_threads(ctx)
        result = run(cfg, ctx)
        result["peer_models"] = _peer_models(cfg, result, ctx)
        result["world_size"] = ctx.world_size
        result["backend"] = ctx.backend
        barrier(ctx)
    return result if ctx.is_main else None


def _peer_models(cfg: TrainConfig, result: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """What ``peers.pt`` holds (see :func:`training.inference.peer_models_document`), taking
    ``state`` out of ``result``: every DML peer, or the one global model of FedAvg / local SGD."""
    states = all_gather_objects(result.pop("state"), ctx)
    manifest = Manifest.read(cfg.data.shards, kind="images")
    if result["mode"] == "dml":
        names, fingerprints = list(result["peers"]), list(result["init_fingerprints"])
    else:
        states, names = states[:1], [cfg.model.name]
        fingerprints = [init_fingerprint(states[0])]
    shape = tuple(int(d) for d in manifest.extra["feature_shape"])
    return peer_models_document(states, names, fingerprints, shape, int(manifest.extra["num_classes"]))


def main_many(cfgs: Sequence[TrainConfig]) -> list[dict[str, Any]] | None:
    """Run several configs one after another in ONE process group (one launch for many arms/seeds).

    All configs must agree on the launch section; used by the comparison command, where paying the
    launch cost once instead of once per (arm, seed) is most of the saving. The arms share one
    ``run.dir``, so they keep no checkpoints (a restarted comparison runs again from the start),
    and their results leave the final parameters out.
    """
    if not cfgs:
        return []
    launch = cfgs[0].launch
    if any(c.launch != launch for c in cfgs):
        raise ValueError("main_many: every config must have the same [launch] section")
    results = []
    with distributed(use_gpu=launch.use_gpu, timeout_s=launch.timeout_s) as ctx:
        _limit_cpu_threads(ctx)
        for cfg in cfgs:
            uncheckpointed = dataclasses.replace(
                cfg, run=dataclasses.replace(cfg.run, checkpoint=False, resume=False)
            )
            result = run(uncheckpointed, ctx)
            del result["state"]
            result["world_size"] = ctx.world_size
            result["backend"] = ctx.backend
            results.append(result)
        barrier(ctx)
    return results if ctx.is_main else None
