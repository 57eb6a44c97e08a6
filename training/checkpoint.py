"""Checkpoints: one file per run directory, written atomically by the main rank.

``checkpoint.pt`` holds the full (unsharded) model and optimizer state, the scheduler state,
every rank's RNG states, the finished epoch and the global step. The state dicts go through
``torch.distributed.checkpoint.state_dict`` (``get_state_dict``/``set_state_dict`` with
``full_state_dict=True``), so the same code serves a plain module, DDP and FSDP2: for FSDP the
shards are gathered on save and re-sharded on load, and the file can be loaded into any strategy
and world size.

Saving is a collective (FSDP gathers), so every rank calls :func:`save_checkpoint`; only the main
rank writes. The write goes to a temporary file in the same directory, then ``os.replace``: a
crash mid-write leaves the previous checkpoint intact. On resume only the main rank reads the
file and broadcasts it, so the run directory need not be visible to other machines.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from training.dist import DistContext, all_gather_objects

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU, CUDA when present, Python, NumPy)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    step: int,
    ctx: DistContext,
    extra: dict[str, Any] | None = None,
) -> Path | None:
    """Collective: gather full state on the main rank and write it atomically. Returns the path there."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    rngs = all_gather_objects(rng_state(), ctx)
    if not ctx.is_main:
        return None
    state = {
        "model": model_sd,
        "optimizer": optim_sd,
        "scheduler": scheduler.state_dict(),
        "rng": rngs,
        "epoch": epoch,
        "step": step,
        "world_size": ctx.world_size,
        "extra": extra or {},
    }
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ctx: DistContext,
) -> dict[str, Any] | None:
    """Collective: restore model, optimizer, scheduler and this rank's RNG from ``run_dir``.

    Returns ``{"epoch", "step", "extra"}`` of the checkpoint, or None on every rank when the main
    rank finds no checkpoint (a fresh start).
    """
    path = checkpoint_path(run_dir)
    holder: list[Any] = [None]
    if ctx.is_main and path.exists():
        holder = [torch.load(path, map_location="cpu", weights_only=False)]
    if ctx.world_size > 1:
        # The whole state travels as one object: simple, and fine for the model sizes here.
        # (set_state_dict's broadcast_from_rank0 covers DTensor/FSDP only, not DDP.)
        dist.broadcast_object_list(holder, src=0)
    meta = holder[0]
    if meta is None:
        return None
    opts = StateDictOptions(full_state_dict=True)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=meta["model"],
        optim_state_dict=meta["optimizer"],
        options=opts,
    )
    scheduler.load_state_dict(meta["scheduler"])
    rngs = meta["rng"]
    if ctx.global_rank < len(rngs):
        set_rng_state(rngs[ctx.global_rank])
    return {"epoch": meta["epoch"], "step": meta["step"], "extra": meta["extra"]}


def load_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict in a checkpoint file (for evaluation, fusion and tests)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)["model"]
