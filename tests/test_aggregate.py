"""FedAvg aggregation arithmetic against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.aggregate import (
    num_selected,
    proximal_term,
    select_clients,
    weighted_average,
)


def test_weighted_average_unequal_client_sizes_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([4.0, 8.0]), "b": torch.tensor([4.0])}
    out = weighted_average([a, b], [1, 3])
    # (1*1 + 3*4)/4 = 3.25, (1*2 + 3*8)/4 = 6.5, (0 + 12)/4 = 3
    assert out["w"].tolist() == [3.25, 6.5]
    assert out["b"].tolist() == [3.0]


def test_weighted_average_three_clients_against_plain_python():
    counts = [10, 25, 65]
    values = [[0.5, -1.0, 2.0], [1.5, 3.0, -2.0], [-0.25, 0.0, 7.0]]
    states = [{"p": torch.tensor(v, dtype=torch.float32)} for v in values]
    expected = [sum(n * v[i] for n, v in zip(counts, values, strict=True)) / sum(counts) for i in range(3)]
    got = weighted_average(states, counts)["p"].tolist()
    assert got == pytest.approx(expected, abs=1e-6)
    # Equal weights are a plain mean, not the count-weighted one.
    plain = weighted_average(states, [1, 1, 1])["p"].tolist()
    assert plain == pytest.approx([sum(v[i] for v in values) / 3 for i in range(3)], abs=1e-6)


def test_weighted_average_keeps_integer_buffers_and_dtype():
    a = {"w": torch.tensor([1.0], dtype=torch.float32), "n": torch.tensor(3)}
    b = {"w": torch.tensor([2.0], dtype=torch.float32), "n": torch.tensor(9)}
    out = weighted_average([a, b], [1, 1])
    assert out["w"].dtype == torch.float32 and out["w"].item() == 1.5
    assert out["n"].item() == 3


def test_weighted_average_rejects_mismatch():
    with pytest.raises(ValueError, match="different parameter names"):
        weighted_average([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        weighted_average([{"a": torch.zeros(1)}, {"a": torch.zeros(2)}], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        weighted_average([{"a": torch.zeros(1)}], [0])


@pytest.mark.parametrize(
    ("clients", "fraction", "expected"),
    [(10, 0.1, 1), (10, 0.3, 3), (10, 0.05, 1), (10, 1.0, 10), (4, 0.5, 2), (3, 0.5, 1), (2, 0.01, 1)],
)
def test_num_selected(clients, fraction, expected):
    assert num_selected(clients, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_num_selected_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"collab\.fraction"):
        num_selected(4, fraction)


def test_select_clients_is_seeded_sorted_and_covers_everyone():
    picks = [select_clients(10, 0.3, seed=7, round_index=r) for r in range(50)]
    assert picks == [select_clients(10, 0.3, seed=7, round_index=r) for r in range(50)]
    for p in picks:
        assert len(p) == 3 and p == sorted(set(p)) and all(0 <= c < 10 for c in p)
    assert len({tuple(p) for p in picks}) > 1  # not the same subset every round
    assert set().union(*map(set, picks)) == set(range(10))
    assert picks != [select_clients(10, 0.3, seed=8, round_index=r) for r in range(50)]
    assert select_clients(4, 1.0, seed=0, round_index=3) == [0, 1, 2, 3]


def test_proximal_term_and_gradient_by_hand():
    w = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    anchor = [torch.tensor([0.0, 1.0]), torch.tensor([[1.0]])]
    mu = 0.5
    term = proximal_term(w, anchor, mu)
    # mu/2 * ((1-0)^2 + (2-1)^2 + (3-1)^2) = 0.25 * 6
    assert term.item() == pytest.approx(1.5)
    term.backward()
    # The gradient is mu * (w - w_global), the anchor held constant.
    assert w[0].grad.tolist() == pytest.approx([0.5, 0.5])
    assert w[1].grad.tolist() == [[pytest.approx(1.0)]]
    assert proximal_term(w, anchor, 0.0).item() == 0.0
    assert math.isclose(proximal_term(w, [x.detach() for x in w], 3.0).item(), 0.0)
