"""``optim.schedule``: the cosine schedule against hand-computed values, and its config checks."""

from __future__ import annotations

import pytest
import torch

from training.config import load_config
from training.optim import build_optimizer


def test_cosine_goes_from_lr_to_zero_over_the_run() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt, sched = build_optimizer([p], load_config(None, ["optim.lr=0.1", "optim.schedule=cosine"]).optim, 4)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # 0.1 * (1 + cos(pi * t / 4)) / 2 for t = 0..4, then held at 0.
    assert lrs == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447, 0.0, 0.0], abs=1e-6)


def test_cosine_needs_the_total_and_is_for_train_only() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="total number of optimizer steps"):
        build_optimizer([p], load_config(None, ["optim.schedule=cosine"]).optim)
    with pytest.raises(ValueError, match=r"optim\.schedule"):
        load_config(None, ["optim.schedule=linear"])
    with pytest.raises(ValueError, match=r"optim\.schedule"):
        load_config(None, ["optim.schedule=cosine", "collab.mode=dml"])
