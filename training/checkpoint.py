"""Checkpoints: written atomically by the main rank, each with a checksum record; the last K kept.

A checkpoint holds the full (unsharded) model and optimizer state, the scheduler state,
every rank's RNG states, the finished epoch and the global step. The state dicts go through
``torch.distributed.checkpoint.state_dict`` (``get_state_dict``/``set_state_dict`` with
``full_state_dict=True``), so the same code serves a plain module, DDP and FSDP2: for FSDP the
shards are gathered on save and re-sharded on load, and the file can be loaded into any strategy
and world size.

Saving is a collective (FSDP gathers), so every rank calls :func:`save_checkpoint`; only the main
rank writes. It writes ``checkpoints/step-<n>.pt`` (temporary file, fsync, ``os.replace``), then
its record with size and SHA-256 (:mod:`contracts.checkpoints`), then points ``checkpoint.pt`` at
it (a hard link, so no second copy), and finally removes all but the newest
``run.keep_checkpoints``. A crash at any point leaves the earlier checkpoints intact. On resume
only the main rank reads: the newest checkpoint whose bytes match its record, skipping (with a
warning) a partial or damaged one; it broadcasts the state, so the run directory need not be
visible to other machines. A run directory from before step checkpoints (``checkpoint.pt`` only)
still resumes.

Each rank may also save a small state of its own (``rank_state``: e.g. its running loss sums in
the middle of an epoch); it is gathered with the RNG states and handed back to the same rank.

``torch.distributed.checkpoint`` is imported where a checkpoint is saved or resumed, not with the
module: it costs about 0.8 s to import, and the inference path (every Python worker of
``spark-collab predict``, ``spark-collab generate``) only reads a model's weights. Training
imports it before its process group exists (:func:`training.dist.distributed` says why).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from contracts.atomic import write_bytes_atomic
from contracts.checkpoints import CheckpointRecord, latest_intact, sha256_of, write_record
from contracts.rundir import CHECKPOINT, CHECKPOINT_DIR, RunDir
from training.dist import DistContext, all_gather_objects


class CheckpointWriteError(RuntimeError):
    """The run directory refused a checkpoint (full or read-only disk); earlier ones are untouched."""


class NoIntactCheckpoint(RuntimeError):
    """Checkpoints exist in the run directory but none of them passed its checks."""


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
    *,
    epoch_step: int = 0,
    rank_state: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path | None:
    """Collective: gather full state on the main rank and write it atomically. Returns the path there.

    ``epoch`` is the last finished epoch; ``epoch_step`` the optimizer steps already taken in the
    epoch after it (0 at an epoch boundary). ``keep``: how many step checkpoints to keep.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    per_rank = all_gather_objects({"rng": rng_state(), "state": rank_state or {}}, ctx)
    rngs = [r["rng"] for r in per_rank]
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
        "epoch_step": epoch_step,
        "rank_state": [r["state"] for r in per_rank],
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        return write_step_checkpoint(run_dir, step, epoch, buffer.getvalue(), keep)
    except OSError as exc:
        raise CheckpointWriteError(
            f"run.dir {run_dir}: cannot write the checkpoint of step {step} ({exc.strerror or exc}); "
            "the earlier checkpoints are intact: free space or make the directory writable, then "
            "resume with --set run.resume=true (or choose another run.dir)"
        ) from exc


def write_step_checkpoint(run_dir: str | Path, step: int, epoch: int, data: bytes, keep: int) -> Path:
    """Write serialized checkpoint ``data`` as step ``step``: bytes, record, latest link, pruning."""
    run = RunDir.at(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    path = run.step_checkpoint(step)
    write_bytes_atomic(path, data, fsync=True)
    write_record(path, CheckpointRecord(step=step, epoch=epoch, bytes=len(data), sha256=sha256_of(data)))
    _point_latest_at(path, run.checkpoint, data)
    _prune(run, keep)
    return run.checkpoint


def _point_latest_at(path: Path, latest: Path, data: bytes) -> None:
    """``checkpoint.pt`` (what tools and older code read) becomes the new checkpoint, atomically."""
    tmp = latest.with_name(f".{latest.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this filesystem: a copy
        write_bytes_atomic(latest, data)
        return
    os.replace(tmp, latest)


def _prune(run: RunDir, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints and leftovers of interrupted writes."""
    for old in run.step_checkpoints()[keep:]:
        RunDir.checkpoint_record(old).unlink(missing_ok=True)  # record first: never a record without data
        old.unlink(missing_ok=True)
    for leftover in run.checkpoints.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def read_latest(run_dir: str | Path) -> dict[str, Any] | None:
    """Main rank: the state of the newest intact checkpoint (warning about any skipped), or None.

    Raises :class:`NoIntactCheckpoint` when checkpoints exist but none passed its checks.
    """
    run = RunDir.at(run_dir)
    warnings: list[str] = []
    found = latest_intact(run_dir, warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if found is not None:
        if warnings:
            print(
                f"warning: resuming from {found.path} (step {found.record.step})", file=sys.stderr, flush=True
            )
        return torch.load(io.BytesIO(found.data), map_location="cpu", weights_only=False)
    if warnings:
        raise NoIntactCheckpoint(
            f"run.dir {run_dir}: no intact checkpoint in {CHECKPOINT_DIR}/ to resume from; "
            "pass --overwrite to start over"
        )
    if run.checkpoint.exists():  # a run directory written before step checkpoints existed
        return torch.load(run.checkpoint, map_location="cpu", weights_only=False)
    return None


def read_on_main_rank(read: Callable[[], Any], ctx: DistContext, errors: tuple[type[Exception], ...]) -> Any:
    """Collective: what ``read()`` returns on the main rank, on every rank. One of ``errors`` raised
    there is sent too and raised on every rank alike, so that no rank waits in a collective for the
    main one. The object travels whole: simple, and fine for the model sizes here
    (set_state_dict's broadcast_from_rank0 covers DTensor/FSDP only, not DDP)."""
    holder: list[Any] = [None]
    if ctx.is_main:
        try:
            holder = [read()]
        except errors as exc:
            holder = [exc]
    if ctx.world_size > 1:
        dist.broadcast_object_list(holder, src=0)
    if isinstance(holder[0], errors):
        raise holder[0]
    return holder[0]


def load_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ctx: DistContext,
) -> dict[str, Any] | None:
    """Collective: restore model, optimizer, scheduler and this rank's RNG from ``run_dir``.

    Returns ``{"epoch", "step", "epoch_step", "extra", "rank_state"}`` of the checkpoint (this
    rank's own ``rank_state``), or None on every rank when the main rank finds no checkpoint (a
    fresh start).
    """
    meta = read_on_main_rank(lambda: read_latest(run_dir), ctx, (NoIntactCheckpoint,))
    if meta is None:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

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
    states = meta.get("rank_state", [])
    return {
        "epoch": meta["epoch"],
        "step": meta["step"],
        "epoch_step": meta.get("epoch_step", 0),
        "extra": meta["extra"],
        "rank_state": states[ctx.global_rank] if ctx.global_rank < len(states) else {},
    }


def load_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict in a checkpoint file (for evaluation, fusion and tests)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)["model"]
