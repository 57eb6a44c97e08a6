"""Process-group setup and teardown in one place.

Naming (as in nanoGPT / torchtitan):

- ``global_rank``: this process's rank among all ``world_size`` ranks; use it for data sharding
  and for "who writes" (``is_main`` is ``global_rank == 0``).
- ``local_rank``: index on this machine; use it only to pick the device (``cuda:<local_rank>``).

Under ``torchrun`` (and therefore TorchDistributor) the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_*`` variables are set and the group is joined with ``env://``. Without them (a plain
``python`` call, unit tests) a one-process group is created on a free local port, so the same
code path, collectives included, runs everywhere.
"""

from __future__ import annotations

import gc
import importlib
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this rank stands; handed to everything that needs to know."""

    global_rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, metrics, checkpoints and results."""
        return self.global_rank == 0


def env_ranks() -> tuple[int, int, int]:
    """(global_rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, local, world


def select_device(use_gpu: bool, local_rank: int) -> torch.device:
    """``cuda:<local_rank>`` when asked for and present; CPU otherwise. A missing GPU is an error."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "launch.use_gpu=true but CUDA is not available on this rank; set launch.use_gpu=false"
        )
    count = torch.cuda.device_count()
    # TorchDistributor narrows CUDA_VISIBLE_DEVICES per task, so local_rank may exceed what is visible.
    return torch.device("cuda", local_rank % count)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


# How many process groups this process has created; keys each one's rendezvous apart.
_incarnation = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop_dtensor_caches() -> None:
    """Clear DTensor's process-wide caches (sharding propagation, redistribution plans).

    Their entries hold the DeviceMesh of an FSDP2 model, and the mesh holds the process group, so
    without this the group's gloo threads outlive ``destroy_process_group()`` exactly as with DDP.
    Private torch APIs (checked on torch 2.13): whatever is missing in another version is skipped.
    """
    if "torch.distributed.tensor" not in sys.modules:
        return  # no DTensor was ever made in this process
    with suppress(ImportError, AttributeError):
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache

        _clear_sharding_prop_cache()
    with suppress(ImportError, AttributeError):
        from torch.distributed.tensor import _redistribute

        _redistribute.clear_redistribute_planner_cache()
        _redistribute._gen_transform_infos.cache_clear()
    with suppress(ImportError, AttributeError):
        from torch.distributed.tensor._collective_utils import MeshTopoInfo

        MeshTopoInfo.build_from_mesh.cache_clear()


@contextmanager
def distributed(use_gpu: bool = False, timeout_s: float = 600.0) -> Iterator[DistContext]:
    """Join (or create) the default process group for the duration of the block.

    ``timeout_s`` bounds every collective, so a rank whose peer died errors out instead of
    waiting forever. The group is destroyed in ``finally`` whatever happens inside.
    """
    if dist.is_initialized():
        raise RuntimeError(
            "a process group is already initialised in this process; nest no distributed() blocks"
        )
    rank, local_rank, world = env_ranks()
    device = select_device(use_gpu, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend_for(device)
    timeout = timedelta(seconds=timeout_s)
    # training.checkpoint imports torch.distributed.checkpoint only when a checkpoint is saved or
    # resumed (inference never needs it). Imported for the first time while a gloo group exists,
    # it leaves three gloo threads running after destroy_process_group() (torch 2.13); imported
    # before the group, none.
    importlib.import_module("torch.distributed.checkpoint.state_dict")

    global _incarnation
    _incarnation += 1
    if "MASTER_ADDR" in os.environ and "RANK" in os.environ:
        # A key prefix per incarnation: destroy_process_group resets torch's group counter, so a
        # second group on the same (torchrun agent) store would otherwise read the first group's
        # stale gloo/NCCL addresses and hang. Every rank runs the same sequence of groups.
        # torchrun --max-restarts keeps its store across restarts: the restart count keeps a
        # restarted round's keys apart from those of the round that failed, for the same reason.
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
        store = dist.PrefixStore(f"spark-collab/{restart}/{_incarnation}", store)
        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            kwargs["device_id"] = device  # eager NCCL init, bound to this rank's GPU
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world, timeout=timeout, **kwargs
        )
    else:
        if world != 1:
            raise RuntimeError(
                f"WORLD_SIZE={world} but MASTER_ADDR/RANK are not set; start ranks with torchrun"
            )
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://127.0.0.1:{_free_port()}",
            rank=0,
            world_size=1,
            timeout=timeout,
        )
    try:
        yield DistContext(
            global_rank=rank, local_rank=local_rank, world_size=world, device=device, backend=backend
        )
    finally:
        # DDP's reducer sits in a reference cycle that keeps the group alive past
        # destroy_process_group(). Left to the interpreter's final collection, the group's gloo
        # worker threads are torn down during finalization, where one that still has to drop a
        # tensor cannot take the GIL: the process then aborts ("terminate called without an active
        # exception", SIGABRT) after its work is done. Seen in about one launch in ten here
        # (torch 2.13, gloo); collecting first makes the teardown happen now, in order.
        # FSDP2 keeps the group alive another way: DTensor's sharding caches hold the device mesh.
        _drop_dtensor_caches()
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few Python numbers across ranks (float64, on the rank's device for NCCL)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_min_int(value: int, ctx: DistContext) -> int:
    """Minimum of an integer across ranks (e.g. steps per epoch every rank can take)."""
    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, indexed by global rank (small picklable objects only)."""
    if ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op on one rank)."""
    if ctx.world_size > 1:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()
