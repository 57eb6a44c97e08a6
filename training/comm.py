"""Communication counted at the collective call: the bytes each rank hands to a collective.

Every collective that training traffic goes through (gradients, parameter deltas, peer parameters)
is called through a wrapper here, which adds the payload this rank contributes to a
:class:`CommCounter` before calling torch.distributed:

- ``all_reduce(t)``: ``t.numel() * t.element_size()``;
- ``all_gather(outputs, t)``: the same, of this rank's ``t`` (what it sends; it receives the rest);
- DDP's gradient all-reduce: a comm hook (:func:`count_ddp_gradients`) counts each gradient
  bucket the same way, then runs DDP's own all-reduce.

The count is the payload, not the wire traffic of one algorithm: a ring all-reduce on W ranks moves
2 (W - 1) / W times the payload per rank (exactly 1x on two ranks), a tree another amount. One
convention for every mode makes the ratios between modes independent of the backend's algorithm.
On one rank nothing is sent, so nothing is counted. The float64 scalars that logging and
evaluation reduce (losses) are not training traffic and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


def payload_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor``'s elements (what a collective is handed)."""
    return tensor.numel() * tensor.element_size()


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@dataclass
class CommCounter:
    """Bytes this rank sent through counted collectives, in total and per kind of traffic."""

    bytes_sent: int = 0
    calls: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.calls += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + nbytes

    def state_dict(self) -> dict[str, object]:
        """For checkpoints: a resumed run keeps counting from where it stopped."""
        return {"bytes_sent": self.bytes_sent, "calls": self.calls, "by_kind": dict(self.by_kind)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.bytes_sent = int(state["bytes_sent"])  # type: ignore[call-overload]
        self.calls = int(state["calls"])  # type: ignore[call-overload]
        self.by_kind = dict(state["by_kind"])  # type: ignore[call-overload]


def all_reduce(
    tensor: torch.Tensor,
    counter: CommCounter,
    kind: str = "all_reduce",
    op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM,
) -> torch.Tensor:
    """In-place ``dist.all_reduce`` of ``tensor``, counted; a no-op on one rank. Returns ``tensor``."""
    if _world_size() > 1:
        counter.add(kind, payload_bytes(tensor))
        dist.all_reduce(tensor, op=op)
    return tensor


def all_gather(tensor: torch.Tensor, counter: CommCounter, kind: str = "all_gather") -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape everywhere), indexed by rank, counted; ``[tensor]`` on one rank."""
    world = _world_size()
    if world == 1:
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(world)]
    counter.add(kind, payload_bytes(tensor))
    dist.all_gather(out, tensor)
    return out


def count_ddp_gradients(model: nn.Module, counter: CommCounter, kind: str = "ddp_gradients") -> None:
    """Count the gradient buckets a ``DistributedDataParallel`` model all-reduces (a comm hook).

    The hook counts the bucket's flat buffer and then hands it to DDP's default all-reduce hook, so
    the arithmetic is DDP's own. Passes skipped with ``no_sync`` (gradient accumulation) call no hook
    and are not counted, as they send nothing.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    # No annotations: DDP compares them with dist.GradBucket at registration, and postponed
    # annotations (strings) would fail that check.
    def hook(_, bucket):  # type: ignore[no-untyped-def]
        counter.add(kind, payload_bytes(bucket.buffer()))
        return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]

    model.register_comm_hook(None, hook)  # type: ignore[operator]
