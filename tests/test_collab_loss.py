"""DML loss and gradient against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from training.collab_dml import dml_loss


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def test_dml_loss_value_by_hand():
    z_self = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    z_peers = [[[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], [[2.0, 2.0, -2.0], [1.0, 1.0, 1.0]]]
    y = [0, 1]
    weight, t = 0.7, 2.0
    ce = sum(-math.log(_softmax(z)[c]) for z, c in zip(z_self, y, strict=True)) / 2
    kls = []
    for peer in z_peers:
        total = 0.0
        for zs, zp in zip(z_self, peer, strict=True):
            ps = _softmax([v / t for v in zs])
            pp = _softmax([v / t for v in zp])
            total += sum(a * math.log(a / b) for a, b in zip(pp, ps, strict=True))
        kls.append(total / 2)
    expected = ce + weight * t * t * sum(kls) / len(kls)
    loss, ce_part, kl_part = dml_loss(
        torch.tensor(z_self), [torch.tensor(p) for p in z_peers], torch.tensor(y), weight, t
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert ce_part.item() == pytest.approx(ce, rel=1e-5)
    assert kl_part.item() == pytest.approx(t * t * sum(kls) / len(kls), rel=1e-5)


def test_dml_gradient_matches_closed_form_and_peers_are_detached():
    torch.manual_seed(0)
    n, c, t, weight = 4, 5, 3.0, 0.5
    z = torch.randn(n, c, requires_grad=True)
    peer = torch.randn(n, c, requires_grad=True)
    y = torch.tensor([0, 3, 1, 4])
    loss, _, _ = dml_loss(z, [peer], y, weight, t)
    loss.backward()
    # d/dz CE = (softmax(z) - onehot)/N; d/dz T^2 KL(p_peer || softmax(z/T)) = T (softmax(z/T) - p_peer)/N
    onehot = torch.nn.functional.one_hot(y, c).float()
    expected = (torch.softmax(z.detach(), 1) - onehot) / n + weight * t * (
        torch.softmax(z.detach() / t, 1) - torch.softmax(peer.detach() / t, 1)
    ) / n
    assert torch.allclose(z.grad, expected, atol=1e-6)
    assert peer.grad is None


def test_dml_weight_zero_is_plain_cross_entropy():
    z = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    y = torch.tensor([1, 1])
    loss, _, kl = dml_loss(z, [torch.tensor([[5.0, -5.0], [5.0, -5.0]])], y, 0.0)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item())
    assert kl.item() > 0  # still measured, just not trained on
    alone, _, kl_alone = dml_loss(z, [], y, 1.0)
    assert alone.item() == pytest.approx(loss.item()) and kl_alone.item() == 0.0
