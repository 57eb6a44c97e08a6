"""One replica (peer) of collaborative GPT training: its data, its init, its model and inner AdamW.

Every rank holds one replica, a model of its own trained with batches of ``train.batch_size``
sequences (the batch of one model). With ``collab.partition = "windows"`` the W replicas' batches
of an iteration are the W slices of one draw of ``W * batch_size`` windows, so together they read
exactly the windows data-parallel training with a batch of ``W * batch_size`` reads (same token
budget, same seed); with ``"shards"`` replica r draws only from train shards r, r + W, ...
(non-IID when the shards are different source files).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from contracts.manifest import Manifest
from training.collab_dml import dml_loss
from training.dist import DistContext
from training.gpt import GPT
from training.lm_config import OUTER_MODES, GPTConfig
from training.lm_data import BatchSlice, TokenWindows
from training.lm_init import init_weights
from training.lm_loop import autocast, build_adamw, build_gpt, lm_loss


def replica_windows(cfg: GPTConfig, manifest: Manifest, rank: int, world: int) -> TokenWindows:
    """The training windows replica ``rank`` reads (see the module docstring, ``partition``)."""
    assert cfg.collab is not None
    split = cfg.data.train_split
    own = None
    if cfg.collab.partition == "shards":
        own = list(range(rank, manifest.num_shards(split), world))
        if not own:
            raise ValueError(
                f"collab.partition: {cfg.data.shards} has {manifest.num_shards(split)} {split!r} shards for "
                f"{world} replicas; make at least one shard per replica or use partition = 'windows'"
            )
    return TokenWindows(cfg.data.shards, split, cfg.model.block_size, manifest, shard_indices=own)


def all_replicas_batch(cfg: GPTConfig, world: int) -> int:
    """Sequences all ``world`` replicas train on in one iteration together (one batch each)."""
    return cfg.train.batch_size * world


def all_replicas_config(cfg: GPTConfig, world: int) -> GPTConfig:
    """``cfg`` with the batch of all replicas together as its batch: the data-parallel view that
    :func:`training.lm_loop.estimate_loss` reads, so that the ranks split the evaluation windows of
    a data-parallel run with the same token budget."""
    train = dataclasses.replace(cfg.train, batch_size=all_replicas_batch(cfg, world))
    return dataclasses.replace(cfg, train=train)


def peer_seed(cfg: GPTConfig, rank: int) -> int:
    """Init seed of peer ``rank``: shared by DiLoCo/FedAvg replicas and same_init peers."""
    assert cfg.collab is not None
    if cfg.collab.mode in OUTER_MODES or cfg.collab.same_init:
        return cfg.train.seed
    return cfg.train.seed + 1000 * rank


def build_replica(cfg: GPTConfig, vocab_size: int, seed: int, ctx: DistContext) -> GPT:
    """A GPT initialised from ``seed`` (or loaded from ``train.init_from``) without touching the
    global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_gpt(cfg.model, vocab_size)
    if cfg.train.init_from:
        model.load_state_dict(init_weights(cfg, vocab_size, ctx))
    return model.to(ctx.device)


def param_bytes(model: nn.Module) -> int:
    """Bytes of the model's distinct parameters (a tied weight counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


class Replica:
    """One rank's model, inner AdamW with its schedule, and its training windows."""

    def __init__(self, cfg: GPTConfig, ctx: DistContext, windows: TokenWindows, model: GPT) -> None:
        self.cfg, self.ctx, self.windows, self.model = cfg, ctx, windows, model
        self.optimizer, self.scheduler = build_adamw(model, cfg.optim)
        self.micro = cfg.micro_batch()
        self.accum = cfg.train.batch_size // self.micro
        self.draw = all_replicas_batch(cfg, ctx.world_size)

    def batches(self, it: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This replica's batch of iteration ``it``, one (x, y) per accumulation pass: its slices of
        the iteration's draw of windows for all replicas."""
        out = []
        for m in range(self.accum):
            part = BatchSlice(
                micro_step=m,
                rank=self.ctx.global_rank,
                world_size=self.ctx.world_size,
                micro_batch=self.micro,
            )
            x, y = self.windows.train_batch(self.cfg.train.seed, it, self.draw, part)
            out.append((x.to(self.ctx.device), y.to(self.ctx.device)))
        return out

    def step(
        self, it: int, teachers: list[nn.Module] | None = None, weight: float = 0.0
    ) -> tuple[float, float]:
        """One inner AdamW step (iteration ``it``); returns (cross-entropy, KL) means over the passes.

        ``teachers``: stale peer copies whose predictions the KL term pulls toward (codistillation).
        """
        c = self.cfg.collab
        temperature = c.temperature if c is not None else 1.0
        ce_sum, kl_sum = 0.0, 0.0
        for x, y in self.batches(it):
            with autocast(self.ctx, self.cfg.train.bf16):
                if teachers and weight > 0:
                    logits, _ = self.model(x)
                    vocab = logits.shape[-1]
                    with torch.no_grad():
                        peer_logits = [t(x)[0].reshape(-1, vocab).float() for t in teachers]
                    loss, ce, kl = dml_loss(
                        logits.reshape(-1, vocab).float(), peer_logits, y.reshape(-1), weight, temperature
                    )
                else:
                    loss = lm_loss(self.model, x, y)
                    ce, kl = loss.detach(), torch.zeros(())
            (loss / self.accum).backward()
            ce_sum += float(ce)
            kl_sum += float(kl)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return ce_sum / self.accum, kl_sum / self.accum
