"""Codistillation and independent GPT peers: every rank trains a model of its own.

- ``dml`` (codistillation, Anil et al., 2018): each peer adds ``weight * KL(p_peer || p_self)``
  per token, toward the predictions of stale copies of the other peers on its own batch. The
  copies are refreshed by an all-gather of the peers' parameters every ``exchange_every`` k steps
  (k = 1: the peers' current parameters). At the end the peers are fused: ``ensemble`` (mean of
  the peers' probabilities) or ``average`` (mean of parameters; needs peers that share an init).
- ``independent``: the same peers with no exchange at all (the baseline of ``dml``).

A checkpoint is written at every evaluation (``run.checkpoint``) and every ``run.checkpoint_every``
iterations: peer 0's model, AdamW and
schedule are the checkpoint's model, optimizer and scheduler (the model ``spark-collab generate
--run`` loads); every other rank's model, AdamW and schedule travel as its rank state, with, on
every rank, the RNG, the sums of the current log interval and the parameters it last sent to the
others (from which the stale copies are rebuilt on resume). ``run.resume`` continues from the
newest one; on CPU the resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from training import checkpoint, lm_collab_report
from training.comm import CommCounter, all_gather, all_reduce
from training.dist import DistContext
from training.faults import maybe_fail
from training.lm_collab_replica import Replica, all_replicas_batch, build_replica, peer_seed
from training.lm_collab_run import CollabRun
from training.lm_config import GPTConfig
from training.lm_data import TokenWindows
from training.lm_loop import autocast, checkpoint_extra, estimate_loss

PEER_SUMMARY_KEYS = ("peer_val_losses", "mean_peer_val_loss", "ensemble_val_loss", "peer_kl")


@torch.no_grad()
def refresh_peer_copies(
    model: nn.Module, copies: dict[int, nn.Module], ctx: DistContext, comm: CommCounter
) -> torch.Tensor:
    """All-gather every peer's parameters (counted) into this rank's stale copies of the others.

    Returns the flat parameters this rank sent (what the others' copies of it now hold).
    """
    flat = parameters_to_vector(model.parameters()).detach()
    load_peer_copies(all_gather(flat, comm, "peer_parameters"), copies)
    return flat


def load_peer_copies(gathered: list[torch.Tensor], copies: dict[int, nn.Module]) -> None:
    """Peer r's copy takes ``gathered[r]`` (flat parameters) for every peer this rank copies."""
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

    The windows are ``eval_iters`` batches of every peer's batch together (``W * batch_size``).
    Each rank runs its own model over all of them and the log-probabilities are all-gathered per
    batch (evaluation traffic, not counted). The peer KL is the mean over ordered pairs
    (i, j != i) of the per-token KL(p_i || p_j): 0 when the peers predict alike.
    """
    was_training = model.training
    model.eval()
    world = ctx.world_size
    batch = all_replicas_batch(cfg, world)
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


def _on_cpu(state: Any) -> Any:
    """``state`` with every tensor copied to the CPU: rank state is pickled to the main rank, and a
    CUDA tensor would be unpickled onto a device of the sender's."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(v) for v in state)
    return state


class PeerTraining:
    """One rank's peer, its stale copies of the others, and the checkpoints of both."""

    def __init__(self, run: CollabRun) -> None:
        cfg, ctx = run.cfg, run.ctx
        self.run, self.cfg, self.ctx, self.c = run, cfg, ctx, run.c
        rank, world = ctx.global_rank, ctx.world_size
        self.model = build_replica(cfg, run.vocab_size, peer_seed(cfg, rank), ctx)
        self.replica = Replica(cfg, ctx, run.train_windows, self.model)
        self.exchanging = self.c.mode == "dml" and world > 1
        self.copies: dict[int, nn.Module] = {}
        if self.exchanging:
            # Shells of the peer's shape: their weights are replaced by the exchange at the first
            # step (or on resume) before any use, so they are neither initialised nor loaded.
            self.copies = {r: copy.deepcopy(self.model).eval() for r in range(world) if r != rank}
            for peer in self.copies.values():
                peer.requires_grad_(False)
        self.exchanges = 0
        self.sent: torch.Tensor | None = None  # this rank's parameters as of the last exchange

    def step(self, it: int) -> tuple[float, float]:
        """Iteration ``it``: refresh the copies when an exchange is due, then one AdamW step."""
        if self.exchanging and it % self.c.exchange_every == 0:
            self.sent = refresh_peer_copies(self.model, self.copies, self.ctx, self.run.comm)
            self.exchanges += 1
        weight = self.c.weight if self.c.mode == "dml" else 0.0
        return self.replica.step(it, list(self.copies.values()), weight)

    def save(self, at: int) -> None:
        """Collective: the checkpoint of iteration ``at`` (see the module docstring)."""
        run, replica = self.run, self.replica
        extra = checkpoint_extra(self.cfg, run.vocab_size, None)
        extra.update(
            exchanges=self.exchanges,
            comm=run.comm.state_dict(),
            mode=self.c.mode,
            replicas=self.ctx.world_size,
        )
        rank_state: dict[str, Any] = {"log_window": run.log_window_state(), "sent": self.sent}
        if not self.ctx.is_main:  # the main rank's peer is the checkpoint's model itself
            rank_state.update(
                model=self.model.state_dict(),
                optimizer=replica.optimizer.state_dict(),
                scheduler=replica.scheduler.state_dict(),
            )
        checkpoint.save_checkpoint(
            run.run_dir, self.model, replica.optimizer, replica.scheduler, 0, at, self.ctx, extra,
            rank_state=_on_cpu(rank_state), keep=self.cfg.run.keep_checkpoints,
        )  # fmt: skip

    def resume(self) -> int | None:
        """Collective: restore the newest checkpoint in run.dir; returns its iteration (None: none there)."""
        run, replica = self.run, self.replica
        meta = run.load_checkpoint(self.model, replica.optimizer, replica.scheduler)
        if meta is None:
            return None
        own = meta["rank_state"]
        if "model" in own:  # not the main rank: the checkpoint's model was peer 0's
            self.model.load_state_dict(own["model"])
            replica.optimizer.load_state_dict(own["optimizer"])
            replica.scheduler.load_state_dict(own["scheduler"])
        run.load_log_window_state(own["log_window"])
        run.comm.load_state_dict(meta["extra"]["comm"])
        self.exchanges = meta["extra"]["exchanges"]
        if self.exchanging:
            self.sent = own["sent"].to(self.ctx.device)
            # Not counted: the uninterrupted run sent these bytes at the exchange that made the copies.
            load_peer_copies(all_gather(self.sent, CommCounter(), "resume"), self.copies)
        return meta["step"]

    def fuse_by_averaging(self, it: int) -> None:
        """fusion = "average": every peer becomes the mean of the peers' parameters, evaluated once more."""
        run = self.run
        with torch.no_grad():
            flat = parameters_to_vector(self.model.parameters()).detach().clone()
            all_reduce(flat, run.comm, "fusion")
            vector_to_parameters(flat / self.ctx.world_size, self.model.parameters())
        if run.val_windows is None:
            return
        fused = estimate_loss(self.model, run.val_windows, run.eval_cfg, self.ctx, self.replica.micro)
        run.record(
            {
                "kind": "eval",
                "iter": it,
                "val_loss": fused,
                "fused": "average",
                "comm_bytes": run.comm.bytes_sent,
            }
        )
        if self.ctx.is_main:
            print(f"fused by parameter averaging: val loss {fused:.4f}", flush=True)


def run_peers(cfg: GPTConfig, ctx: DistContext, t_enter: float) -> dict[str, Any]:
    """A codistillation or independent run on this rank (collective); returns the result."""
    run = CollabRun(cfg, ctx, t_enter)
    c = run.c
    peers = PeerTraining(run)
    model = peers.model
    resumed_from = peers.resume() if cfg.run.resume else None
    it = resumed_from or 0
    run.reset_records(it)
    if ctx.is_main:
        what = (
            f"codistillation (weight {c.weight:g}, T {c.temperature:g}, exchange every {c.exchange_every} steps)"
            if c.mode == "dml"
            else "independent peers (no exchange)"
        )
        print(
            f"{what}: {ctx.world_size} peers of gpt ({model.num_parameters():,} parameters), "
            f"{cfg.train.max_iters} steps of {cfg.train.batch_size} x {cfg.model.block_size} tokens per peer; "
            f"fusion {c.fusion}",
            flush=True,
        )

    def evaluate_and_save(at: int) -> None:
        stats = evaluate_peers(model, run.val_windows, cfg, ctx) if run.val_windows else {}
        if cfg.run.checkpoint and at > 0:
            peers.save(at)
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

    if resumed_from is None:
        evaluate_and_save(0)
    flops_per_iter = run.flops_per_iter(model)
    model.train()
    run.t_log = time.perf_counter()
    while it < cfg.train.max_iters:
        run.heartbeat.beat(it)
        maybe_fail(cfg.fault, ctx.global_rank, it)
        if run.first_step_time is None:
            run.first_step_time = time.time()
        lr_now = peers.replica.scheduler.get_last_lr()[0]
        ce, kl = peers.step(it)
        it += 1
        run.note_step(ce, kl)
        if it % cfg.train.log_interval == 0 or it == cfg.train.max_iters:
            run.log(it, lr_now, flops_per_iter)
        if it % cfg.train.eval_interval == 0 or it == cfg.train.max_iters:
            t_eval = time.perf_counter()
            evaluate_and_save(it)
            run.pause += time.perf_counter() - t_eval
        elif cfg.run.checkpoint and cfg.run.checkpoint_every and it % cfg.run.checkpoint_every == 0:
            t_save = time.perf_counter()
            peers.save(it)
            run.pause += time.perf_counter() - t_save
    run.heartbeat.beat(it, force=True)

    # The main rank's last evaluation of the peers (before any fusion) is what the result reports.
    final = next((r for r in reversed(run.records) if r.get("kind") == "eval"), {}) if ctx.is_main else {}
    if c.fusion == "average":
        peers.fuse_by_averaging(it)
    extra: dict[str, Any] = {
        "exchanges": peers.exchanges,
        "fusion": c.fusion,
        "resumed_from_iter": resumed_from,
        **{key: final.get(key) for key in PEER_SUMMARY_KEYS},
    }
    return run.result(it, model, extra)
