"""Fusing several peers into one predictor, and measuring how much the peers agree.

``ensemble`` averages the peers' predicted probabilities and works for any set of peers.
``average`` averages their parameters into one network; that only makes sense when the peers
started from the same initialisation (and kept the same architecture): independently initialised
networks solve the task with permuted hidden units, so their parameter average is a network that
has never been trained and typically collapses towards chance accuracy. The init fingerprint
recorded before training lets us refuse that case with an explanation instead of a bad model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from training.aggregate import weighted_average

_EPS = 1e-12


class FusionError(ValueError):
    """Fusion asked for something that would silently give a wrong model."""


def init_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A short hash of names, shapes, dtypes and values; equal iff the networks are bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(
            tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def ensemble_probs(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of the peers' class probabilities, shape ``[N, C]``."""
    if not probs:
        raise FusionError("ensemble of zero peers")
    return torch.stack([p.detach() for p in probs]).mean(dim=0)


def average_parameters(
    states: Sequence[Mapping[str, torch.Tensor]],
    init_fingerprints: Sequence[str],
    counts: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Parameter average of peers that share an init; :class:`FusionError` otherwise."""
    if len(states) != len(init_fingerprints):
        raise FusionError(f"{len(states)} peers but {len(init_fingerprints)} init fingerprints")
    distinct = sorted(set(init_fingerprints))
    if len(distinct) > 1:
        raise FusionError(
            "fusion = 'average' refused: the peers started from different initialisations "
            f"(init fingerprints {', '.join(init_fingerprints)}); independently initialised networks learn "
            "permuted hidden units, so averaging their parameters collapses accuracy. Use fusion = 'ensemble', "
            "or start every peer from the same init (collab.same_init = true)."
        )
    try:
        return weighted_average(states, counts if counts is not None else [1.0] * len(states))
    except ValueError as exc:
        raise FusionError(
            f"fusion = 'average' refused: {exc}; peers with different architectures can only be ensembled"
        ) from exc


def predictions(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each peer's argmax, shape ``[P, N]``."""
    return torch.stack([p.argmax(dim=1) for p in probs])


def disagreement(probs: Sequence[torch.Tensor]) -> float:
    """Fraction of samples on which not all peers predict the same class (0 for one peer)."""
    preds = predictions(probs)
    if preds.shape[0] < 2 or preds.shape[1] == 0:
        return 0.0
    differs = (preds != preds[0:1]).any(dim=0)
    return differs.float().mean().item()


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``mean_n sum_c p log(p / q)`` for probability rows; zero-probability terms of ``p`` contribute 0."""
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    terms = torch.where(
        p > 0, p * (torch.log(p.clamp_min(_EPS)) - torch.log(q.clamp_min(_EPS))), torch.zeros_like(p)
    )
    return terms.sum(dim=1).mean()


def mean_pairwise_kl(probs: Sequence[torch.Tensor]) -> float:
    """Mean of ``KL(p_i || p_j)`` over all ordered pairs ``i != j`` (0 for one peer)."""
    n = len(probs)
    if n < 2:
        return 0.0
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += kl_divergence(probs[i], probs[j]).item()
    return total / (n * (n - 1))


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of probability (or logit) rows against integer labels."""
    if labels.numel() == 0:
        return float("nan")
    return (probs.argmax(dim=1) == labels).float().mean().item()
