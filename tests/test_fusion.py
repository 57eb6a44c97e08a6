"""Fusion and agreement metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.fusion import (
    FusionError,
    accuracy,
    average_parameters,
    disagreement,
    ensemble_probs,
    init_fingerprint,
    kl_divergence,
    mean_pairwise_kl,
)


def test_ensemble_averages_probabilities():
    p1 = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    p2 = torch.tensor([[0.5, 0.5], [0.6, 0.4]])
    assert ensemble_probs([p1, p2]).tolist() == [
        [pytest.approx(0.7), pytest.approx(0.3)],
        [pytest.approx(0.4), pytest.approx(0.6)],
    ]


def test_disagreement_counts_samples_where_any_peer_differs():
    def onehot(classes):
        return torch.nn.functional.one_hot(torch.tensor(classes), 3).float()

    a, b, c = onehot([0, 1, 2, 2]), onehot([0, 1, 1, 2]), onehot([1, 1, 2, 2])
    assert disagreement([a, b]) == 0.25
    assert disagreement([a, b, c]) == 0.5  # samples 0 and 2
    assert disagreement([a]) == 0.0
    assert disagreement([a, a]) == 0.0


def test_kl_and_mean_pairwise_kl_by_hand():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.9, 0.1]])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl_divergence(p, q).item() == pytest.approx(kl_pq)
    assert mean_pairwise_kl([p, q]) == pytest.approx((kl_pq + kl_qp) / 2)
    assert mean_pairwise_kl([p, p, p]) == pytest.approx(0.0)
    # A zero in p contributes nothing (0 log 0 = 0).
    assert kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])).item() == pytest.approx(
        math.log(2)
    )


def test_accuracy():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(probs, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_parameter_average_refused_across_different_inits():
    a, b = _net(0), _net(1)
    fps = [init_fingerprint(a.state_dict()), init_fingerprint(b.state_dict())]
    assert fps[0] != fps[1]
    with pytest.raises(FusionError, match=r"different initialisations.*ensemble"):
        average_parameters([a.state_dict(), b.state_dict()], fps)


def test_parameter_average_allowed_from_same_init():
    a, b = _net(3), _net(3)
    fp = init_fingerprint(a.state_dict())
    assert fp == init_fingerprint(b.state_dict())
    with torch.no_grad():  # the peers drift apart during training; the fingerprint is of the init
        for p in b.parameters():
            p.add_(1.0)
    avg = average_parameters([a.state_dict(), b.state_dict()], [fp, fp])
    for name, tensor in a.state_dict().items():
        assert torch.allclose(avg[name], tensor + 0.5)


def test_parameter_average_refused_across_architectures():
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 4)
    with pytest.raises(FusionError, match="ensembled"):
        average_parameters([a.state_dict(), b.state_dict()], ["x", "x"])
