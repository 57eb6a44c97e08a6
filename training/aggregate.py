"""Federated aggregation arithmetic: weighted parameter averaging, client selection, FedProx.

Everything here is pure (tensors in, tensors out, no process group), so the rank-side runners in
``training.collab_averaging`` and the tests share one definition of the maths.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


def normalised_weights(counts: Sequence[float]) -> list[float]:
    """``n_k / sum(n)`` for each client; every count must be positive."""
    if not counts:
        raise ValueError("no clients to average")
    if any(c <= 0 for c in counts):
        raise ValueError(f"sample counts must be positive, got {list(counts)}")
    total = float(sum(counts))
    return [float(c) / total for c in counts]


def weighted_average(states: Sequence[StateDict], counts: Sequence[float]) -> dict[str, torch.Tensor]:
    """FedAvg's aggregate: ``sum_k n_k / n * w_k`` for every floating-point entry.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) cannot be averaged meaningfully;
    they are taken from the first client. All states must have the same keys and shapes.
    """
    weights = normalised_weights(counts)
    if len(weights) != len(states):
        raise ValueError(f"{len(states)} state dicts but {len(weights)} sample counts")
    first = states[0]
    for k, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            raise ValueError(f"client {k} has different parameter names than client 0")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(
                    f"client {k}: {name} has shape {tuple(tensor.shape)}, client 0 {tuple(first[name].shape)}"
                )
    out: dict[str, torch.Tensor] = {}
    for name, ref in first.items():
        if not ref.is_floating_point():
            out[name] = ref.clone()
            continue
        # Accumulate in float64 so the result does not depend on client order beyond rounding.
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for w, state in zip(weights, states, strict=True):
            acc += w * state[name].detach().to(torch.float64)
        out[name] = acc.to(ref.dtype)
    return out


def num_selected(num_clients: int, fraction: float) -> int:
    """Clients per round, ``max(floor(C * K), 1)`` as in McMahan et al.; ``C = 1`` selects all."""
    if num_clients < 1:
        raise ValueError(f"need at least one client, got {num_clients}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"collab.fraction must be in (0, 1], got {fraction}")
    # The epsilon keeps 0.3 * 10 (= 2.9999999999999996) from flooring to 2.
    return max(1, min(num_clients, math.floor(fraction * num_clients + 1e-9)))


def select_clients(num_clients: int, fraction: float, seed: int, round_index: int) -> list[int]:
    """The sorted client ids taking part in ``round_index``.

    Every rank calls this with the same arguments and must get the same answer without talking to
    the others, so the choice depends only on ``(seed, round_index)`` via a string-seeded RNG
    (string seeds are hashed deterministically, unlike ``hash()`` of a tuple across processes).
    """
    m = num_selected(num_clients, fraction)
    if m == num_clients:
        return list(range(num_clients))
    rng = random.Random(f"fedavg-select:{seed}:{round_index}")
    return sorted(rng.sample(range(num_clients), m))


def proximal_term(params: Iterable[torch.Tensor], anchor: Iterable[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's ``mu / 2 * ||w - w_global||^2``; differentiable in ``params``, anchor treated as constant."""
    total: torch.Tensor | None = None
    for p, a in zip(params, anchor, strict=True):
        sq = (p - a.detach()).pow(2).sum()
        total = sq if total is None else total + sq
    if total is None:
        return torch.zeros(())
    return 0.5 * mu * total
