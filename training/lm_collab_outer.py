"""DiLoCo and FedAvg for GPT replicas: inner AdamW steps on each rank, an outer step on shared parameters.

- ``diloco`` (Douillard et al., 2023): every replica takes ``inner_steps`` H AdamW steps on its
  own data; then the outer step: the parameter delta ``theta_outer - theta_replica`` is averaged
  over the replicas (one all-reduce of all parameters) and used as the gradient of an SGD with
  Nesterov momentum on the shared outer parameters (outer lr 0.7 and momentum 0.9 in the paper);
  every replica continues from the new outer parameters. The inner AdamW state stays with its
  replica. The outer parameters and the outer optimizer are identical on every rank.
- ``fedavg``: the same loop with outer SGD at lr 1.0 and no momentum, which is the plain average
  of the replicas' parameters.

A checkpoint is written at every evaluation (which falls on an outer step), and with
``run.checkpoint_every`` N on the first outer step at or after every multiple of N: the outer parameters
(the model a user loads), the outer optimizer, the inner schedule, and per rank the inner AdamW
state, the sums of the current log interval and the RNG; resume from it is exact.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from training import checkpoint, lm_collab_report
from training.comm import CommCounter, all_reduce
from training.dist import DistContext
from training.faults import maybe_fail
from training.lm_collab_replica import Replica, build_replica
from training.lm_collab_run import CollabRun
from training.lm_config import GPTConfig, LMCollabConfig
from training.lm_loop import checkpoint_extra, estimate_loss


def outer_hyperparameters(c: LMCollabConfig) -> tuple[float, float, bool]:
    """(lr, momentum, nesterov) of the outer SGD; fedavg is plain averaging whatever the keys say."""
    if c.mode == "fedavg":
        return 1.0, 0.0, False
    return c.outer_lr, c.outer_momentum, c.outer_nesterov and c.outer_momentum > 0


@torch.no_grad()
def outer_step(
    model: nn.Module, outer: nn.Module, outer_opt: torch.optim.Optimizer, comm: CommCounter
) -> None:
    """DiLoCo's outer step: mean delta (one all-reduce) as the outer gradient, outer SGD, copy back."""
    params, outer_params = list(model.parameters()), list(outer.parameters())
    delta = torch.cat([(o - p).reshape(-1) for o, p in zip(outer_params, params, strict=True)])
    all_reduce(delta, comm, "outer_delta")
    delta /= torch.distributed.get_world_size()
    offset = 0
    for o in outer_params:
        o.grad = delta[offset : offset + o.numel()].view_as(o).clone()
        offset += o.numel()
    outer_opt.step()
    outer_opt.zero_grad(set_to_none=True)
    for p, o in zip(params, outer_params, strict=True):
        p.copy_(o)


def run_outer(cfg: GPTConfig, ctx: DistContext, t_enter: float) -> dict[str, Any]:
    """A DiLoCo or FedAvg run on this rank (collective); returns the result."""
    run = CollabRun(cfg, ctx, t_enter)
    c = run.c
    model = build_replica(cfg, run.vocab_size, cfg.train.seed, ctx)
    replica = Replica(cfg, ctx, run.train_windows, model)
    # The shared outer parameters: the same on every rank, moved only by the outer step.
    outer = copy.deepcopy(model)
    lr, momentum, nesterov = outer_hyperparameters(c)
    outer_opt = torch.optim.SGD(outer.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
    micro = replica.micro

    it, rounds, resumed_from = 0, 0, None
    if cfg.run.resume:
        meta = run.load_checkpoint(outer, outer_opt, replica.scheduler)
        if meta is not None:
            it = resumed_from = meta["step"]
            rounds = meta["extra"]["rounds"]
            run.comm.load_state_dict(meta["extra"]["comm"])
            replica.optimizer.load_state_dict(meta["rank_state"]["inner_optimizer"])
            if "log_window" in meta["rank_state"]:
                run.load_log_window_state(meta["rank_state"]["log_window"])
            with torch.no_grad():
                for p, o in zip(model.parameters(), outer.parameters(), strict=True):
                    p.copy_(o)
    run.reset_records(resumed_from or 0)
    if ctx.is_main:
        print(
            f"{c.mode}: {ctx.world_size} replicas of gpt ({model.num_parameters():,} parameters), "
            f"H={c.inner_steps} inner AdamW steps, outer SGD lr {lr:g} momentum {momentum:g}"
            f"{' nesterov' if nesterov else ''}; {cfg.train.max_iters} inner steps of "
            f"{cfg.train.batch_size} x {cfg.model.block_size} tokens per replica",
            flush=True,
        )

    def save(at: int) -> None:
        """Collective: the checkpoint of outer step ``at`` (the replicas hold the outer parameters)."""
        extra = checkpoint_extra(cfg, run.vocab_size, None)
        extra.update(rounds=rounds, comm=run.comm.state_dict(), mode=c.mode, replicas=ctx.world_size)
        rank_state = {
            "inner_optimizer": replica.optimizer.state_dict(),
            "log_window": run.log_window_state(),
        }
        checkpoint.save_checkpoint(
            run.run_dir, outer, outer_opt, replica.scheduler, 0, at, ctx, extra,
            rank_state=rank_state, keep=cfg.run.keep_checkpoints,
        )  # fmt: skip

    def evaluate_and_save(at: int) -> None:
        train_loss = estimate_loss(model, run.eval_train_windows, run.eval_cfg, ctx, micro)
        val_loss = (
            estimate_loss(model, run.val_windows, run.eval_cfg, ctx, micro) if run.val_windows else None
        )
        if cfg.run.checkpoint and at > 0:
            save(at)
        rec = {
            "kind": "eval",
            "iter": at,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "rounds": rounds,
            "comm_bytes": run.comm.bytes_sent,
        }
        run.record(rec)
        if ctx.is_main and val_loss is not None:
            print(lm_collab_report.eval_line(rec), flush=True)

    if resumed_from is None:
        evaluate_and_save(0)
    flops_per_iter = run.flops_per_iter(model)
    last_eval = last_save = it
    every = cfg.run.checkpoint_every
    model.train()
    run.t_log = time.perf_counter()  # the first interval's speed leaves out the evaluation at 0
    while it < cfg.train.max_iters:
        run.heartbeat.beat(it)
        maybe_fail(cfg.fault, ctx.global_rank, it)
        if run.first_step_time is None:
            run.first_step_time = time.time()
        lr_now = replica.scheduler.get_last_lr()[0]
        ce, kl = replica.step(it)
        it += 1
        run.note_step(ce, kl)
        boundary = it % c.inner_steps == 0 or it == cfg.train.max_iters
        if boundary:
            outer_step(model, outer, outer_opt, run.comm)
            rounds += 1
        if it % cfg.train.log_interval == 0 or it == cfg.train.max_iters:
            run.log(it, lr_now, flops_per_iter)
        # Evaluations fall on outer steps (the first one at or after each eval_interval multiple),
        # where the replicas hold the outer parameters.
        if boundary and (
            it // cfg.train.eval_interval > last_eval // cfg.train.eval_interval or it == cfg.train.max_iters
        ):
            t_eval = time.perf_counter()
            evaluate_and_save(it)
            last_eval = last_save = it
            run.pause += time.perf_counter() - t_eval
        elif boundary and cfg.run.checkpoint and every and it // every > last_save // every:
            # run.checkpoint_every: likewise on the first outer step at or after each multiple.
            t_save = time.perf_counter()
            save(it)
            last_save = it
            run.pause += time.perf_counter() - t_save
    run.heartbeat.beat(it, force=True)
    return run.result(
        it, model, {"rounds": rounds, "resumed_from_iter": resumed_from, "inner_steps": c.inner_steps}
    )
