"""Checkpoints of collaborative runs: one file per finished round (FedAvg, local SGD) or epoch (DML).

Unlike data-parallel training, the ranks of a collaborative run do not hold one model between
them: every DML peer has its own model and optimizer, and every local-SGD worker its own
optimizer state. A checkpoint therefore holds a ``shared`` part (what every rank agrees on: the
global model of FedAvg / local SGD, the history of round records) and one ``ranks[r]`` entry per
rank (its own model and optimizer where it has them, its step count, its RNG states). The file is
written by the main rank through :func:`training.checkpoint.write_step_checkpoint`: atomically,
with its SHA-256 record, the newest ``run.keep_checkpoints`` kept.

The record's ``epoch`` is the number of finished rounds (DML: epochs); its ``step`` the optimizer
steps of all ranks together up to then, which grows every round even when the main rank's
clients sat a round out (FedAvg with ``collab.fraction < 1``), so file names never repeat.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import (
    CheckpointWriteError,
    NoIntactCheckpoint,
    read_latest,
    read_on_main_rank,
    rng_state,
    set_rng_state,
    write_step_checkpoint,
)
from training.config import TrainConfig
from training.dist import DistContext, all_gather_objects

FORMAT = "collab"


def on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) detached and copied to the CPU.

    Optimizer states live on the rank's device; a checkpoint must be loadable on any device and
    gathered through pickling without naming another rank's GPU.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def checkpoint_due(cfg: TrainConfig, finished: int, total: int) -> bool:
    """Whether a checkpoint is written after ``finished`` of ``total`` rounds (DML: epochs).

    ``run.checkpoint_every`` counts rounds here (0 or 1: every round); the last round always gets
    one, so that a restart after training (while gathering the peers' models) trains nothing again.
    """
    if not cfg.run.checkpoint:
        return False
    every = max(cfg.run.checkpoint_every, 1)
    return finished == total or finished % every == 0


def save_round_checkpoint(
    cfg: TrainConfig,
    ctx: DistContext,
    *,
    finished: int,
    step: int,
    shared: dict[str, Any],
    rank_state: dict[str, Any],
) -> Path | None:
    """Collective: gather every rank's ``rank_state`` (plus its RNG states and ``step``) and have
    the main rank write them with ``shared`` after ``finished`` rounds. Returns the path there."""
    per_rank = all_gather_objects({**on_cpu(rank_state), "step": step, "rng": rng_state()}, ctx)
    if not ctx.is_main:
        return None
    assert cfg.collab is not None
    total_steps = sum(int(r["step"]) for r in per_rank)
    document = {
        "format": FORMAT,
        "mode": cfg.collab.mode,
        "world_size": ctx.world_size,
        "finished": finished,
        "step": total_steps,
        "shared": on_cpu(shared),
        "ranks": per_rank,
    }
    buffer = io.BytesIO()
    torch.save(document, buffer)
    try:
        return write_step_checkpoint(
            cfg.run.dir, total_steps, finished, buffer.getvalue(), cfg.run.keep_checkpoints
        )
    except OSError as exc:
        raise CheckpointWriteError(
            f"run.dir {cfg.run.dir}: cannot write the checkpoint of round {finished} "
            f"({exc.strerror or exc}); the earlier checkpoints are intact: free space or make the "
            "directory writable, then resume with --set run.resume=true (or choose another run.dir)"
        ) from exc


def _read_for_resume(cfg: TrainConfig, world_size: int) -> dict[str, Any] | None:
    """Main rank: the newest intact collab checkpoint of ``run.dir``, checked against this run."""
    assert cfg.collab is not None
    document = read_latest(cfg.run.dir)
    if document is None:
        return None
    if document.get("format") != FORMAT:
        raise ValueError(
            f"run.dir {cfg.run.dir}: its checkpoint was written by data-parallel training, not by a "
            "collaborative run; resume it with `spark-collab train`, or choose another run.dir"
        )
    if document["mode"] != cfg.collab.mode or document["world_size"] != world_size:
        raise ValueError(
            f"run.dir {cfg.run.dir}: its checkpoint is of collab.mode={document['mode']!r} on "
            f"{document['world_size']} ranks, this run is {cfg.collab.mode!r} on {world_size}; "
            "resume with the same config, or choose another run.dir"
        )
    return document


def load_round_checkpoint(cfg: TrainConfig, ctx: DistContext) -> dict[str, Any] | None:
    """Collective: the newest intact checkpoint of ``run.dir`` as ``{"finished", "shared", "rank"}``
    (``rank``: this rank's own entry, its RNG states already restored), or None on every rank when
    there is none (a fresh start). A problem found by the main rank is raised on every rank alike,
    so that no rank waits for the others in a collective."""
    document = read_on_main_rank(
        partial(_read_for_resume, cfg, ctx.world_size), ctx, (NoIntactCheckpoint, ValueError)
    )
    if document is None:
        return None
    mine = document["ranks"][ctx.global_rank]
    set_rng_state(mine["rng"])
    return {"finished": int(document["finished"]), "shared": document["shared"], "rank": mine}
