"""Collaborative training of GPT peers on the rank side: DiLoCo, FedAvg, codistillation, independent.

One replica (peer) per rank, each with its own model and its own AdamW. What couples them is the
mode (``[collab] mode``):

- ``diloco`` (Douillard et al., 2023): every replica takes ``inner_steps`` H AdamW steps on its
  own data; then the outer step: the parameter delta ``theta_outer - theta_replica`` is averaged
  over the replicas (one all-reduce of all parameters) and used as the gradient of an SGD with
  Nesterov momentum on the shared outer parameters (outer lr 0.7 and momentum 0.9 in the paper);
  every replica continues from the new outer parameters. The inner AdamW state stays with its
  replica. The outer parameters and the outer optimizer are identical on every rank.
- ``fedavg``: the same loop with outer SGD at lr 1.0 and no momentum, which is the plain average
  of the replicas' parameters.
- ``dml`` (codistillation, Anil et al., 2018): each peer adds ``weight * KL(p_peer || p_self)``
  per token, toward the predictions of stale copies of the other peers on its own batch. The
  copies are refreshed by an all-gather of the peers' parameters every ``exchange_every`` k steps
  (k = 1: the peers' current parameters). At the end the peers are fused: ``ensemble`` (mean of
  the peers' probabilities) or ``average`` (mean of parameters; needs peers that share an init).
- ``independent``: the same peers with no exchange at all (the baseline of ``dml``).

Data: with ``partition = "windows"`` replica r of W takes slice r of every global batch of
``train.batch_size`` sequences, so the replicas together read exactly the windows data-parallel
training reads (same token budget, same seed); with ``"shards"`` replica r reads only train
shards r, r + W, ... (non-IID when the shards are different source files).

Bytes sent through collectives are counted at the call (:mod:`training.comm`) and reported on
every log line, in every record of metrics.jsonl and in result.json.

DiLoCo and FedAvg write a checkpoint at every evaluation (which falls on an outer step): the outer
parameters (the model a user loads), the outer optimizer, the inner schedule, and per rank the
inner AdamW state and RNG; resume from it is exact. Codistillation and independent runs write no
checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from contracts.atomic import write_json_atomic
from contracts.heartbeat import STARTING, Heartbeat
from contracts.manifest import Manifest
from contracts.rundir import RunDir
from training import checkpoint, lm_collab_report, lm_report
from training.collab import dml_loss
from training.comm import CommCounter, all_gather, all_reduce
from training.dist import DistContext, all_reduce_sum, distributed
from training.faults import maybe_fail
from training.gpt import GPT
from training.lm_config import GPTConfig, LMCollabConfig
from training.lm_data import BatchSlice, TokenWindows
from training.lm_loop import (
    autocast,
    build_adamw,
    build_gpt,
    checkpoint_extra,
    estimate_loss,
    lm_loss,
    peak_flops_per_rank,
)

OUTER_MODES = ("diloco", "fedavg")


def outer_hyperparameters(c: LMCollabConfig) -> tuple[float, float, bool]:
    """(lr, momentum, nesterov) of the outer SGD; fedavg is plain averaging whatever the keys say."""
    if c.mode == "fedavg":
        return 1.0, 0.0, False
    return c.outer_lr, c.outer_momentum, c.outer_nesterov and c.outer_momentum > 0


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


def peer_seed(cfg: GPTConfig, rank: int) -> int:
    """Init seed of peer ``rank``: shared by DiLoCo/FedAvg replicas and same_init peers."""
    assert cfg.collab is not None
    if cfg.collab.mode in OUTER_MODES or cfg.collab.same_init:
        return cfg.train.seed
    return cfg.train.seed + 1000 * rank


def build_replica(cfg: GPTConfig, vocab_size: int, seed: int, device: torch.device) -> GPT:
    """A GPT initialised from ``seed`` without touching the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_gpt(cfg.model, vocab_size)
    return model.to(device)


class Replica:
    """One rank's model, inner AdamW with its schedule, and its training windows."""

    def __init__(self, cfg: GPTConfig, ctx: DistContext, windows: TokenWindows, model: GPT) -> None:
        self.cfg, self.ctx, self.windows, self.model = cfg, ctx, windows, model
        self.optimizer, self.scheduler = build_adamw(model, cfg.optim)
        self.micro = cfg.micro_batch()
        self.accum = cfg.train.batch_size // (ctx.world_size * self.micro)

    def batches(self, it: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This replica's share of iteration ``it``, one (x, y) per accumulation pass."""
        out = []
        for m in range(self.accum):
            part = BatchSlice(
                micro_step=m,
                rank=self.ctx.global_rank,
                world_size=self.ctx.world_size,
                micro_batch=self.micro,
            )
            x, y = self.windows.train_batch(self.cfg.train.seed, it, self.cfg.train.batch_size, part)
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


def param_bytes(model: nn.Module) -> int:
    """Bytes of the model's distinct parameters (a tied weight counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


class _Run:
    """What both kinds of loop share: run directory, windows, records, logging, result."""

    def __init__(self, cfg: GPTConfig, ctx: DistContext, t_enter: float) -> None:
        assert cfg.collab is not None
        self.cfg, self.ctx, self.c, self.t_enter = cfg, ctx, cfg.collab, t_enter
        self.run_dir = Path(cfg.run.dir)
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat = Heartbeat.from_environment(ctx.global_rank)
        self.heartbeat.beat(STARTING, force=True)
        manifest = Manifest.read(cfg.data.shards, kind="tokens")
        block = cfg.model.block_size
        self.train_windows = replica_windows(cfg, manifest, ctx.global_rank, ctx.world_size)
        # Evaluation reads the whole train split, whatever the replica's own part.
        self.eval_train_windows = TokenWindows(cfg.data.shards, cfg.data.train_split, block, manifest)
        self.val_windows = (
            TokenWindows(cfg.data.shards, cfg.data.val_split, block, manifest)
            if manifest.num_shards(cfg.data.val_split)
            else None
        )
        self.vocab_size = self.train_windows.vocab_size
        self.comm = CommCounter()
        self.records: list[dict[str, Any]] = []
        self.peak, self.peak_note = peak_flops_per_rank(cfg, ctx)
        self.t_log, self.iters_since_log, self.pause = time.perf_counter(), 0, 0.0
        self.loss_window, self.kl_window = 0.0, 0.0
        self.first_step_time: float | None = None
        self.t_train0 = time.time()

    def record(self, rec: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.records.append(rec)
            lm_report.append_record(self.run_dir, rec)

    def note_step(self, ce: float, kl: float) -> None:
        self.loss_window += ce
        self.kl_window += kl
        self.iters_since_log += 1

    def log(self, it: int, lr: float, flops_per_iter: float) -> None:
        """Collective: the train record of the last log interval (mean over its steps and the ranks)."""
        world = self.ctx.world_size
        loss_sum, kl_sum = all_reduce_sum([self.loss_window, self.kl_window], self.ctx)
        elapsed = time.perf_counter() - self.t_log - self.pause
        n = self.iters_since_log
        rec: dict[str, Any] = {
            "kind": "train",
            "iter": it,
            "train_loss": loss_sum / (world * n),
            "lr": lr,
            "tokens_per_s": self.cfg.train.batch_size * self.cfg.model.block_size * n / elapsed,
            "mfu": flops_per_iter * n / elapsed / (self.peak * world),
            "elapsed_s": time.time() - self.t_train0,
            "comm_bytes": self.comm.bytes_sent,
        }
        if self.c.mode == "dml":
            rec["kl"] = kl_sum / (world * n)
        self.record(rec)
        if self.ctx.is_main:
            print(lm_collab_report.train_line(rec, self.cfg.train.max_iters), flush=True)
        self.t_log, self.iters_since_log, self.pause = time.perf_counter(), 0, 0.0
        self.loss_window, self.kl_window = 0.0, 0.0

    def result(self, it: int, model: GPT, extra: dict[str, Any]) -> dict[str, Any]:
        t_end = time.time()
        train_recs = [r for r in self.records if r.get("kind") == "train"]
        eval_recs = [r for r in self.records if r.get("kind") == "eval" and r.get("val_loss") is not None]
        steady = train_recs[1:] or train_recs
        result: dict[str, Any] = {
            "model": "gpt",
            "mode": self.c.mode,
            "world_size": self.ctx.world_size,
            "device": self.ctx.device.type,
            "backend": self.ctx.backend,
            "parameters": model.num_parameters(),
            "parameter_bytes": param_bytes(model),
            "vocab_size": self.vocab_size,
            "iters": it,
            "comm_bytes": self.comm.bytes_sent,
            "comm_calls": self.comm.calls,
            "comm_by_kind": dict(self.comm.by_kind),
            "train_loss": train_recs[-1]["train_loss"] if train_recs else None,
            "val_loss": eval_recs[-1]["val_loss"] if eval_recs else None,
            "best_val_loss": min((r["val_loss"] for r in eval_recs), default=None),
            "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady) if steady else None,
            "mfu": sum(r["mfu"] for r in steady) / len(steady) if steady else None,
            "mfu_peak": self.peak_note,
            "timings": {
                "rank_start_unix": self.t_enter,
                "first_step_unix": self.first_step_time,
                "end_unix": t_end,
                "setup_s": (self.first_step_time or t_end) - self.t_enter,
                "total_s": t_end - self.t_enter,
            },
            "run_dir": str(self.run_dir),
            "shards": self.cfg.data.shards,
            "config": self.cfg.to_dict(),
            **extra,
        }
        if self.ctx.is_main:
            if self.cfg.run.plots:
                lm_collab_report.plot_run(
                    self.run_dir, self.records, f"gpt / {self.c.mode} / {self.ctx.world_size}"
                )
            write_json_atomic(RunDir.at(self.run_dir).result, result)
        return result


# ----------------------------------------------------------------------------------------------
# diloco / fedavg
# ----------------------------------------------------------------------------------------------


def _run_outer(cfg: GPTConfig, ctx: DistContext, t_enter: float) -> dict[str, Any]:
    run = _Run(cfg, ctx, t_enter)
    c = run.c
    model = build_replica(cfg, run.vocab_size, cfg.train.seed, ctx.device)
    replica = Replica(cfg, ctx, run.train_windows, model)
    # The shared outer parameters: the same on every rank, moved only by the outer step.
    outer = copy.deepcopy(model)
    lr, momentum, nesterov = outer_hyperparameters(c)
    outer_opt = torch.optim.SGD(outer.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
    micro = replica.micro

    it, rounds, resumed_from = 0, 0, None
    if cfg.run.resume:
        meta = checkpoint.load_checkpoint(run.run_dir, outer, outer_opt, replica.scheduler, ctx)
        if meta is not None:
            it = resumed_from = meta["step"]
            rounds = meta["extra"]["rounds"]
            run.comm.load_state_dict(meta["extra"]["comm"])
            replica.optimizer.load_state_dict(meta["rank_state"]["inner_optimizer"])
            with torch.no_grad():
                for p, o in zip(model.parameters(), outer.parameters(), strict=True):
                    p.copy_(o)
    if ctx.is_main:
        run.records = lm_report.reset_records(run.run_dir, resumed_from or 0)
        print(
            f"{c.mode}: {ctx.world_size} replicas of gpt ({model.num_parameters():,} parameters), "
            f"H={c.inner_steps} inner AdamW steps, outer SGD lr {lr:g} momentum {momentum:g}"
            f"{' nesterov' if nesterov else ''}; {cfg.train.max_iters} inner steps of "
            f"{cfg.train.batch_size // ctx.world_size} x {cfg.model.block_size} tokens per replica",
            flush=True,
        )

    def evaluate_and_save(at: int) -> None:
        train_loss = estimate_loss(model, run.eval_train_windows, cfg, ctx, micro)
        val_loss = estimate_loss(model, run.val_windows, cfg, ctx, micro) if run.val_windows else None
        if cfg.run.checkpoint and at > 0:
            extra = checkpoint_extra(cfg, run.vocab_size, None)
            extra.update(rounds=rounds, comm=run.comm.state_dict(), mode=c.mode)
            rank_state = {"inner_optimizer": replica.optimizer.state_dict()}
            checkpoint.save_checkpoint(
                run.run_dir, outer, outer_opt, replica.scheduler, 0, at, ctx, extra,
                rank_state=rank_state, keep=cfg.run.keep_checkpoints,
            )  # fmt: skip
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
    flops_per_iter = model.flops_per_token(cfg.model.block_size) * cfg.train.batch_size * cfg.model.block_size
    last_eval = it
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
            last_eval = it
            run.pause += time.perf_counter() - t_eval
    run.heartbeat.beat(it, force=True)
    return run.result(
        it, model, {"rounds": rounds, "resumed_from_iter": resumed_from, "inner_steps": c.inner_steps}
    )


# ----------------------------------------------------------------------------------------------
# dml (codistillation) / independent
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def refresh_peer_copies(
    model: nn.Module, copies: dict[int, nn.Module], ctx: DistContext, comm: CommCounter
) -> None:
    """All-gather every peer's parameters (counted) into this rank's stale copies of the others."""
    flat = parameters_to_vector(model.parameters()).detach()
    gathered = all_gather(flat, comm, "peer_parameters")
    for r, peer in copies.items():
        vector_to_parameters(gathered[r], peer.parameters())


def mean_pair_kl(logp: torch.Tensor) -> torch.Tensor:
    """Per position, the mean over ordered peer pairs (i, j != i) of KL(p_i || p_j).

    ``logp``: log-probabilities ``[W, ..., V]`` of W peers; returns ``[...]`` (zeros for one peer).
    Uses sum_{i != j} KL(p_i || p_j) = W sum_i sum_v p_i log p_i - sum_i sum_j sum_v p_i log p_j,
    which needs no loop over pairs.
    """
    world = logp.shape[0]
    if world < 2:
        return torch.zeros(logp.shape[1:-1], dtype=logp.dtype, device=logp.device)
    probs = logp.exp()
    self_term = (probs * logp).sum(dim=-1).sum(dim=0)
    cross = (probs.sum(dim=0) * logp.sum(dim=0)).sum(dim=-1)
    return (world * self_term - cross) / (world * (world - 1))


@torch.no_grad()
def evaluate_peers(
    model: nn.Module, windows: TokenWindows, cfg: GPTConfig, ctx: DistContext
) -> dict[str, Any]:
    """Every peer on the same fixed windows: each peer's loss, the ensemble's, and the mean KL between peers.

    Each rank runs its own model over all ``eval_iters * batch_size`` windows and the log-probabilities
    are all-gathered per batch (evaluation traffic, not counted). The peer KL is the mean over ordered
    pairs (i, j != i) of the per-token KL(p_i || p_j): 0 when the peers predict alike.
    """
    was_training = model.training
    model.eval()
    batch, world = cfg.train.batch_size, ctx.world_size
    starts = windows.fixed_starts(cfg.train.eval_iters * batch)
    peer_nll = torch.zeros(world, dtype=torch.float64)
    ens_nll, kl_sum, tokens = 0.0, 0.0, 0
    for i in range(0, len(starts), batch):
        x, y = windows.windows(starts[i : i + batch])
        x, y = x.to(ctx.device), y.to(ctx.device)
        with autocast(ctx, cfg.train.bf16):
            logits, _ = model(x)
        logp = F.log_softmax(logits.float(), dim=-1)
        if world > 1:
            everyone = [torch.empty_like(logp) for _ in range(world)]
            torch.distributed.all_gather(everyone, logp)
        else:
            everyone = [logp]
        stacked = torch.stack(everyone)  # [W, B, T, V]
        target = y.unsqueeze(0).unsqueeze(-1).expand(world, -1, -1, 1)
        nll = -stacked.gather(-1, target).squeeze(-1)  # [W, B, T]
        peer_nll += nll.double().sum(dim=(1, 2)).cpu()
        ens_logp = torch.logsumexp(stacked, dim=0) - math.log(world)
        ens_nll += float(-ens_logp.gather(-1, y.unsqueeze(-1)).double().sum())
        kl_sum += float(mean_pair_kl(stacked).double().sum())
        tokens += y.numel()
    model.train(was_training)
    peer_losses = (peer_nll / tokens).tolist()
    return {
        "peer_val_losses": peer_losses,
        "mean_peer_val_loss": sum(peer_losses) / world,
        "ensemble_val_loss": ens_nll / tokens,
        "peer_kl": kl_sum / tokens,
    }


def _run_peers(cfg: GPTConfig, ctx: DistContext, t_enter: float) -> dict[str, Any]:
    run = _Run(cfg, ctx, t_enter)
    c = run.c
    rank, world = ctx.global_rank, ctx.world_size
    model = build_replica(cfg, run.vocab_size, peer_seed(cfg, rank), ctx.device)
    replica = Replica(cfg, ctx, run.train_windows, model)
    exchanging = c.mode == "dml" and world > 1
    copies: dict[int, nn.Module] = {}
    if exchanging:
        copies = {
            r: build_replica(cfg, run.vocab_size, 0, ctx.device).eval() for r in range(world) if r != rank
        }
        for peer in copies.values():
            peer.requires_grad_(False)
    if ctx.is_main:
        run.records = lm_report.reset_records(run.run_dir, 0)
        what = (
            f"codistillation (weight {c.weight:g}, T {c.temperature:g}, exchange every {c.exchange_every} steps)"
            if c.mode == "dml"
            else "independent peers (no exchange)"
        )
        print(
            f"{what}: {world} peers of gpt ({model.num_parameters():,} parameters), {cfg.train.max_iters} steps "
            f"of {cfg.train.batch_size // world} x {cfg.model.block_size} tokens per peer; fusion {c.fusion}",
            flush=True,
        )

    def evaluate(at: int) -> None:
        stats = evaluate_peers(model, run.val_windows, cfg, ctx) if run.val_windows else {}
        rec: dict[str, Any] = {
            "kind": "eval",
            "iter": at,
            "val_loss": stats.get("ensemble_val_loss")
            if c.fusion == "ensemble"
            else stats.get("mean_peer_val_loss"),
            "comm_bytes": run.comm.bytes_sent,
            **stats,
        }
        run.record(rec)
        if ctx.is_main and stats:
            print(lm_collab_report.peers_eval_line(rec), flush=True)

    evaluate(0)
    flops_per_iter = model.flops_per_token(cfg.model.block_size) * cfg.train.batch_size * cfg.model.block_size
    exchanges = 0
    it = 0
    model.train()
    run.t_log = time.perf_counter()
    while it < cfg.train.max_iters:
        run.heartbeat.beat(it)
        maybe_fail(cfg.fault, rank, it)
        if run.first_step_time is None:
            run.first_step_time = time.time()
        if exchanging and it % c.exchange_every == 0:
            refresh_peer_copies(model, copies, ctx, run.comm)
            exchanges += 1
        lr_now = replica.scheduler.get_last_lr()[0]
        ce, kl = replica.step(it, list(copies.values()), c.weight if c.mode == "dml" else 0.0)
        it += 1
        run.note_step(ce, kl)
        if it % cfg.train.log_interval == 0 or it == cfg.train.max_iters:
            run.log(it, lr_now, flops_per_iter)
        if it % cfg.train.eval_interval == 0 or it == cfg.train.max_iters:
            t_eval = time.perf_counter()
            evaluate(it)
            run.pause += time.perf_counter() - t_eval
    run.heartbeat.beat(it, force=True)

    final = dict(run.records[-1]) if ctx.is_main else {}
    extra: dict[str, Any] = {"exchanges": exchanges, "fusion": c.fusion}
    if c.fusion == "average":
        with torch.no_grad():
            flat = parameters_to_vector(model.parameters()).detach().clone()
            all_reduce(flat, run.comm, "fusion")
            vector_to_parameters(flat / world, model.parameters())
        if run.val_windows is not None:
            fused = estimate_loss(model, run.val_windows, cfg, ctx, replica.micro)
            rec = {
                "kind": "eval",
                "iter": it,
                "val_loss": fused,
                "fused": "average",
                "comm_bytes": run.comm.bytes_sent,
            }
            run.record(rec)
            if ctx.is_main:
                print(f"fused by parameter averaging: val loss {fused:.4f}", flush=True)
    for key in ("peer_val_losses", "mean_peer_val_loss", "ensemble_val_loss", "peer_kl"):
        extra[key] = final.get(key)
    return run.result(it, model, extra)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def run_collab(cfg: GPTConfig, ctx: DistContext, t_enter: float | None = None) -> dict[str, Any]:
    """Run the ``[collab]`` mode of ``cfg`` inside an initialised process group; returns the result (all ranks)."""
    if cfg.collab is None:
        raise ValueError("[collab]: this runner needs a [collab] section (see conf/collab/gpt_diloco.toml)")
    t_enter = t_enter if t_enter is not None else time.time()
    if cfg.collab.mode in OUTER_MODES:
        return _run_outer(cfg, ctx, t_enter)
    return _run_peers(cfg, ctx, t_enter)


def main(cfg: GPTConfig) -> dict[str, Any]:
    """Rank entry point for the launcher: join the process group, run, leave."""
    t_enter = time.time()
    with distributed(cfg.launch.use_gpu, cfg.launch.collective_timeout_s) as ctx:
        return run_collab(cfg, ctx, t_enter)


def main_many(cfgs: list[GPTConfig]) -> list[dict[str, Any]]:
    """Several runs in a row in one process group (the comparison's arms); DDP arms go to lm_loop."""
    from training.lm_loop import run_training

    results = []
    with distributed(cfgs[0].launch.use_gpu, cfgs[0].launch.collective_timeout_s) as ctx:
        for cfg in cfgs:
            results.append(run_collab(cfg, ctx) if cfg.collab is not None else run_training(cfg, ctx))
    return results
