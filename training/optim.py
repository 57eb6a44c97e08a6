"""The optimizer and the training step shared by data-parallel and collaborative training.

:func:`build_optimizer` turns the ``[optim]`` section into an optimizer with its per-step
schedule; :func:`training_step` is one forward/backward/update. ``training.loop`` (DDP / FSDP)
and the collaborative runners (``training.collab_dml``, ``training.collab_averaging``) both go
through these two, so a change to the update rule reaches every kind of run alike, and the
collaborative modes stay comparable with plain training step for step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.config import OptimConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, targets) -> scalar loss``: what one training step minimises."""


def build_optimizer(
    params: Any, cfg: OptimConfig, total_steps: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Optimizer plus its per-step schedule (``optim.schedule``): the Keras-style time decay
    lr_t = lr / (1 + decay * t), or a cosine from lr to 0 over ``total_steps`` optimizer steps."""
    if cfg.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    elif cfg.name == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)  # type: ignore[arg-type]
    else:
        raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}")
    if cfg.schedule == "cosine":
        if total_steps < 1:
            raise ValueError("optim.schedule=cosine needs the run's total number of optimizer steps")
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps))
        )
    decay = cfg.decay
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + decay * t))
    return opt, sched


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
    autocast: AbstractContextManager[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on batch ``(x, y)``; returns the batch's ``(logits, loss)``, detached.

    ``loss_fn`` sees the logits with their graph, so a collaborative objective (DML's mimicry
    term, FedProx's proximal term) adds its terms there. ``autocast`` (e.g. bf16) covers the
    forward pass and the loss only, as autocast must not cover the backward pass.
    """
    with autocast if autocast is not None else nullcontext():
        logits = model(x)
        loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return logits.detach(), loss.detach()
