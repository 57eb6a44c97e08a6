"""Deep mutual learning (Zhang et al., 2018): one peer per rank, trained side by side on the same batches.

loss_i = CE(y, p_i) + weight * mean_{j != i} KL(p_j || p_i), the peers' predictions exchanged
with ``all_gather`` every step and detached. ``weight = 0`` trains the peers independently from
the same inits and batch order (the paired baseline).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.collab_checkpoint import checkpoint_due, load_round_checkpoint, save_round_checkpoint
from training.collab_common import (
    StepClock,
    check_world,
    cpu_state,
    first_reaching,
    make_model,
    peer_metrics,
    peer_model_name,
    peer_seed,
    predict_probs,
)
from training.config import TrainConfig
from training.data import ShardData, iter_batches
from training.dist import DistContext, all_gather_objects
from training.fusion import accuracy, average_parameters, init_fingerprint
from training.optim import build_optimizer, training_step


def dml_kl(
    logits_self: torch.Tensor, peer_logits: Sequence[torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """Mean over peers of ``KL(p_peer || p_self)`` at ``temperature``, scaled by ``T**2``.

    The ``T**2`` factor (as in Hinton et al.'s distillation) keeps the gradient's size independent of
    the temperature, so ``weight`` means the same thing at every T. Peers' logits are detached here,
    whatever the caller passes: the mimicry term must move only this peer.
    """
    if not peer_logits:
        return logits_self.new_zeros(())
    t = float(temperature)
    log_p_self = F.log_softmax(logits_self / t, dim=1)
    terms = []
    for other in peer_logits:
        log_p_peer = F.log_softmax(other.detach() / t, dim=1)
        # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q); batchmean divides by N.
        terms.append(F.kl_div(log_p_self, log_p_peer, reduction="batchmean", log_target=True))
    return torch.stack(terms).mean() * (t * t)


def dml_loss(
    logits_self: torch.Tensor,
    peer_logits: Sequence[torch.Tensor],
    targets: torch.Tensor,
    weight: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ce, kl)`` for one peer; ``weight = 0`` is plain cross-entropy (the independent baseline)."""
    ce = F.cross_entropy(logits_self, targets)
    kl = dml_kl(logits_self, peer_logits, temperature)
    loss = ce + weight * kl if weight else ce
    return loss, ce.detach(), kl.detach()


def gather_peer_logits(logits: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """The other peers' logits for this batch (already detached: they are someone else's graph)."""
    if ctx.world_size == 1:
        return []
    parts = [torch.empty_like(logits) for _ in range(ctx.world_size)]
    dist.all_gather(parts, logits.detach().contiguous())
    return [p for r, p in enumerate(parts) if r != ctx.global_rank]


def run_dml(cfg: TrainConfig, ctx: DistContext, train: ShardData, test: ShardData) -> dict[str, Any]:
    """One DML peer on this rank; every peer sees the same batches (same data, same shuffle seed).

    With one rank this is plain (centralized) training; with ``collab.weight = 0`` the peers are
    trained independently but keep the same inits and batch order as the DML run (paired baseline).
    The result holds this rank's final parameters under ``state``. With ``run.checkpoint`` every
    peer's model and optimizer are saved after each epoch; ``run.resume`` continues from there.
    """
    c = cfg.collab
    assert c is not None
    check_world(cfg, ctx)
    name = peer_model_name(cfg, ctx.global_rank)
    model = make_model(cfg, name, train, peer_seed(cfg, ctx.global_rank), ctx.device)
    fingerprint = init_fingerprint(model.state_dict())
    opt, sched = build_optimizer(model.parameters(), cfg.optim)
    clock = StepClock(cfg, ctx)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    resumed = load_round_checkpoint(cfg, ctx) if cfg.run.resume else None
    if resumed is not None:
        start_epoch, history = resumed["finished"], list(resumed["shared"]["history"])
        mine = resumed["rank"]
        model.load_state_dict(mine["model"])
        opt.load_state_dict(mine["optimizer"])
        sched.load_state_dict(mine["scheduler"])
        clock.step = int(mine["step"])
    batch, cap = cfg.train.batch_size, cfg.train.max_steps_per_epoch
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # ce, kl, steps

        def mutual_loss(logits: torch.Tensor, y: torch.Tensor, sums: torch.Tensor = sums) -> torch.Tensor:
            loss, ce, kl = dml_loss(logits, gather_peer_logits(logits, ctx), y, c.weight, c.temperature)
            sums += torch.tensor([ce.item(), kl.item(), 1.0], dtype=torch.float64)
            return loss

        batches = iter_batches(train, batch, shuffle=True, seed=cfg.train.seed, epoch=epoch)
        for step, (x, y) in enumerate(batches):
            if cap and step >= cap:
                break
            clock.before_step()
            training_step(model, opt, sched, x.to(ctx.device), y.to(ctx.device), mutual_loss)
        probs = predict_probs(model, test, cfg.train.eval_batch_size, ctx.device)
        gathered = all_gather_objects((probs, (sums[:2] / sums[2].clamp_min(1)).tolist()), ctx)
        rec: dict[str, Any] = {"epoch": epoch + 1, **peer_metrics([g[0] for g in gathered], test.labels)}
        rec["fused_acc"] = rec["ensemble_acc"]
        rec["train_ce"] = [g[1][0] for g in gathered]
        rec["train_kl"] = [g[1][1] for g in gathered]
        rec["elapsed_s"] = time.perf_counter() - t0
        history.append(rec)
        clock.round_done()
        if checkpoint_due(cfg, epoch + 1, cfg.train.epochs):
            save_round_checkpoint(
                cfg,
                ctx,
                finished=epoch + 1,
                step=clock.step,
                shared={"history": history},
                rank_state={
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                },
            )
    final = dict(history[-1])
    final.update(_fuse_dml(cfg, ctx, model, fingerprint, train, test))
    return {
        "mode": "dml",
        "peers": [peer_model_name(cfg, r) for r in range(ctx.world_size)],
        "init_fingerprints": all_gather_objects(fingerprint, ctx),
        "history": history,
        "final": final,
        "epoch_to_target": first_reaching(history, "fused_acc", "epoch", c.target_accuracy),
        "train_s": time.perf_counter() - t0,
        "state": cpu_state(model),
    }


def _fuse_dml(
    cfg: TrainConfig, ctx: DistContext, model: nn.Module, fingerprint: str, train: ShardData, test: ShardData
) -> dict[str, Any]:
    """The fused accuracy after training, by ``collab.fusion``."""
    c = cfg.collab
    assert c is not None
    if c.fusion == "none":
        return {"fusion": "none", "fused_acc": None}
    if c.fusion == "ensemble":
        return {"fusion": "ensemble"}  # already in the last epoch's record
    states = all_gather_objects(({k: v.cpu() for k, v in model.state_dict().items()}, fingerprint), ctx)
    # Raises FusionError (on every rank alike) when the inits differ: see training.fusion.
    avg = average_parameters([s for s, _ in states], [f for _, f in states])
    fused = make_model(cfg, peer_model_name(cfg, 0), train, peer_seed(cfg, 0), ctx.device)
    fused.load_state_dict(avg)
    probs = predict_probs(fused, test, cfg.train.eval_batch_size, ctx.device)
    return {"fusion": "average", "fused_acc": accuracy(probs, test.labels)}
