"""Collaborative training on the rank side: deep mutual learning, FedAvg / FedProx, local SGD.

One peer (DML) or one client (FedAvg) per rank. The coupling between peers is the only thing that
makes this more than independent training:

- ``dml``: loss_i = CE(y, p_i) + weight * mean_{j != i} KL(p_j || p_i), the peers' predictions
  exchanged with ``all_gather`` every step and detached (Zhang et al., 2018).
- ``fedavg``: E local epochs per round on the client's own shard, then the sample-count-weighted
  average of the selected clients' parameters becomes everyone's model (McMahan et al., 2017);
  ``mu > 0`` adds FedProx's proximal term.
- ``local_sgd``: periodic model averaging over all ranks with equal weights (same data shapes).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from contracts.manifest import Manifest
from training.aggregate import proximal_term, select_clients
from training.config import TrainConfig
from training.data import ShardData, iter_batches, load_shard, num_shards
from training.dist import DistContext, all_gather_objects, all_reduce_min_int, barrier, distributed
from training.faults import maybe_fail
from training.fusion import (
    accuracy,
    average_parameters,
    disagreement,
    ensemble_probs,
    init_fingerprint,
    mean_pairwise_kl,
)
from training.inference import peer_models_document
from training.loop import build_optimizer, concat_shards
from training.models import build_model


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


# ----------------------------------------------------------------------------------------------
# Rank side: shared helpers
# ----------------------------------------------------------------------------------------------


def peer_model_name(cfg: TrainConfig, rank: int) -> str:
    """The architecture of peer ``rank``: ``collab.peers`` cycled, else ``model.name``."""
    peers = cfg.collab.peers if cfg.collab is not None else []
    return peers[rank % len(peers)] if peers else cfg.model.name


def peer_seed(cfg: TrainConfig, rank: int) -> int:
    """DML init seed: distinct per peer (as in Zhang et al.) unless ``collab.same_init``."""
    assert cfg.collab is not None
    return cfg.train.seed if cfg.collab.same_init else cfg.train.seed + 1000 * rank


def client_shuffle_seed(seed: int, client: int) -> int:
    """Each client shuffles its own shard with its own stream, reproducible from (seed, client)."""
    return seed * 7_919 + 104_729 * (client + 1)


def make_model(cfg: TrainConfig, name: str, data: ShardData, seed: int, device: torch.device) -> nn.Module:
    """Build model ``name`` for ``data`` with parameters drawn from ``seed`` (independent of global RNG state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, data.feature_shape, data.num_classes, cfg.model)
    return model.to(device)


def make_optimizer(
    model: nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The ``[optim]`` section's optimizer with its Keras-style time decay (shared with plain training)."""
    return build_optimizer(model.parameters(), cfg.optim)


@torch.no_grad()
def predict_probs(model: nn.Module, data: ShardData, batch_size: int, device: torch.device) -> torch.Tensor:
    """Softmax probabilities ``[N, C]`` on CPU, in the data's stored order."""
    was_training = model.training
    model.eval()
    out = [
        torch.softmax(model(x.to(device)).float(), dim=1).cpu()
        for x, _ in iter_batches(data, batch_size, shuffle=False, seed=0, epoch=0)
    ]
    model.train(was_training)
    if not out:
        return torch.zeros(0, data.num_classes)
    return torch.cat(out)


def peer_metrics(probs: Sequence[torch.Tensor], labels: torch.Tensor) -> dict[str, Any]:
    """Each peer's accuracy, the ensemble's, their disagreement and mean pairwise KL."""
    accs = [accuracy(p, labels) for p in probs]
    return {
        "peer_acc": accs,
        "mean_peer_acc": sum(accs) / len(accs),
        "ensemble_acc": accuracy(ensemble_probs(probs), labels),
        "disagreement": disagreement(probs),
        "pairwise_kl": mean_pairwise_kl(probs),
    }


def _gather_logits(logits: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """The other peers' logits for this batch (already detached: they are someone else's graph)."""
    if ctx.world_size == 1:
        return []
    parts = [torch.empty_like(logits) for _ in range(ctx.world_size)]
    dist.all_gather(parts, logits.detach().contiguous())
    return [p for r, p in enumerate(parts) if r != ctx.global_rank]


def _flat_params(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict().values() if t.is_floating_point()]


def _check_world(cfg: TrainConfig, ctx: DistContext) -> None:
    if cfg.launch.num_processes != ctx.world_size:
        raise RuntimeError(
            f"launch.num_processes={cfg.launch.num_processes} but this group has {ctx.world_size} ranks"
        )


class FaultClock:
    """This rank's optimizer steps, counted across epochs, rounds and hosted clients, so that
    ``[fault]`` fires at the same kind of step as in data-parallel training."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.fault = cfg.fault
        self.rank = ctx.global_rank
        self.step = 0

    def before_step(self) -> None:
        maybe_fail(self.fault, self.rank, self.step)
        self.step += 1


def _first_reaching(history: list[dict[str, Any]], key: str, index: str, target: float) -> int | None:
    if target <= 0:
        return None
    for rec in history:
        if rec[key] >= target:
            return int(rec[index])
    return None


# ----------------------------------------------------------------------------------------------
# Deep mutual learning
# ----------------------------------------------------------------------------------------------


def run_dml(
    cfg: TrainConfig, ctx: DistContext, train: ShardData, test: ShardData, *, keep_state: bool = False
) -> dict[str, Any]:
    """One DML peer on this rank; every peer sees the same batches (same data, same shuffle seed).

    With one rank this is plain (centralized) training; with ``collab.weight = 0`` the peers are
    trained independently but keep the same inits and batch order as the DML run (paired baseline).
    """
    c = cfg.collab
    assert c is not None
    _check_world(cfg, ctx)
    name = peer_model_name(cfg, ctx.global_rank)
    model = make_model(cfg, name, train, peer_seed(cfg, ctx.global_rank), ctx.device)
    fingerprint = init_fingerprint(model.state_dict())
    opt, sched = make_optimizer(model, cfg)
    clock = FaultClock(cfg, ctx)
    batch, cap = cfg.train.batch_size, cfg.train.max_steps_per_epoch
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # ce, kl, steps
        batches = iter_batches(train, batch, shuffle=True, seed=cfg.train.seed, epoch=epoch)
        for step, (x, y) in enumerate(batches):
            if cap and step >= cap:
                break
            clock.before_step()
            x, y = x.to(ctx.device), y.to(ctx.device)
            logits = model(x)
            loss, ce, kl = dml_loss(logits, _gather_logits(logits, ctx), y, c.weight, c.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += torch.tensor([ce.item(), kl.item(), 1.0], dtype=torch.float64)
        probs = predict_probs(model, test, cfg.train.eval_batch_size, ctx.device)
        gathered = all_gather_objects((probs, (sums[:2] / sums[2].clamp_min(1)).tolist()), ctx)
        rec: dict[str, Any] = {"epoch": epoch + 1, **peer_metrics([g[0] for g in gathered], test.labels)}
        rec["fused_acc"] = rec["ensemble_acc"]
        rec["train_ce"] = [g[1][0] for g in gathered]
        rec["train_kl"] = [g[1][1] for g in gathered]
        rec["elapsed_s"] = time.perf_counter() - t0
        history.append(rec)
    final = dict(history[-1])
    fused = _fuse_dml(cfg, ctx, model, fingerprint, train, test)
    final.update(fused)
    fingerprints = all_gather_objects(fingerprint, ctx)
    result = {
        "mode": "dml",
        "peers": [peer_model_name(cfg, r) for r in range(ctx.world_size)],
        "init_fingerprints": fingerprints,
        "history": history,
        "final": final,
        "epoch_to_target": _first_reaching(history, "fused_acc", "epoch", c.target_accuracy),
        "train_s": time.perf_counter() - t0,
    }
    if keep_state:  # for tests: this rank's final parameters
        result["state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result


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


# ----------------------------------------------------------------------------------------------
# FedAvg / FedProx and local SGD
# ----------------------------------------------------------------------------------------------


def hosted_clients(num_clients: int, ctx: DistContext) -> list[int]:
    """Clients (shards) this rank simulates: r, r + W, r + 2W, ... (one per rank when K = W)."""
    return list(range(ctx.global_rank, num_clients, ctx.world_size))


def local_update(
    global_model: nn.Module,
    data: ShardData,
    cfg: TrainConfig,
    client: int,
    round_index: int,
    device: torch.device,
    clock: FaultClock | None = None,
) -> tuple[nn.Module, float]:
    """E local epochs of batch B on one client's shard from the global model; (model, mean loss).

    A fresh optimizer per round (clients keep no state between rounds, as in McMahan et al.); with
    ``collab.mu > 0`` the loss adds FedProx's ``mu / 2 ||w - w_global||^2``.
    """
    c = cfg.collab
    assert c is not None
    local = copy.deepcopy(global_model)
    local.train()
    anchor = [p.detach().clone() for p in global_model.parameters()]
    opt, sched = make_optimizer(local, cfg)
    seed = client_shuffle_seed(cfg.train.seed, client)
    total, steps = 0.0, 0
    for e in range(c.local_epochs):
        for step, (x, y) in enumerate(
            iter_batches(
                data, cfg.train.batch_size, shuffle=True, seed=seed, epoch=round_index * c.local_epochs + e
            )
        ):
            if cfg.train.max_steps_per_epoch and step >= cfg.train.max_steps_per_epoch:
                break
            if clock is not None:
                clock.before_step()
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(local(x), y)
            if c.mu > 0:
                loss = loss + proximal_term(local.parameters(), anchor, c.mu)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            steps += 1
    return local, total / max(steps, 1)


def _allreduce_weighted(
    models: Sequence[nn.Module], counts: Sequence[float], template: nn.Module, ctx: DistContext
) -> dict[str, torch.Tensor]:
    """Global ``sum_k n_k w_k / sum_k n_k`` over the selected clients of every rank (float64 sums)."""
    keys = [k for k, v in template.state_dict().items() if v.is_floating_point()]
    ref = template.state_dict()
    flat = torch.zeros(sum(ref[k].numel() for k in keys) + 1, dtype=torch.float64, device=ctx.device)
    for model, n in zip(models, counts, strict=True):
        state = model.state_dict()
        flat[:-1] += float(n) * torch.cat([state[k].detach().reshape(-1).to(torch.float64) for k in keys])
        flat[-1] += float(n)
    if ctx.world_size > 1:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if flat[-1] <= 0:
        raise RuntimeError("no samples in the selected clients of this round")
    out = dict(ref)
    offset = 0
    for k in keys:
        n = ref[k].numel()
        out[k] = (flat[offset : offset + n] / flat[-1]).reshape(ref[k].shape).to(ref[k].dtype)
        offset += n
    return out


def _broadcast_model(model: nn.Module, ctx: DistContext) -> None:
    """Everyone starts from rank 0's init (identical anyway from the seed; this makes it certain)."""
    if ctx.world_size > 1:
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)


def run_fedavg(
    cfg: TrainConfig,
    ctx: DistContext,
    clients: dict[int, ShardData],
    num_clients: int,
    test: ShardData,
    *,
    keep_state: bool = False,
) -> dict[str, Any]:
    """FedAvg (or FedProx with ``mu > 0``) with ``num_clients`` clients spread over the ranks.

    ``clients`` maps the client ids this rank hosts to their shards. Every round: the fraction C of
    clients chosen by :func:`select_clients` (same answer on every rank), E local epochs each from
    the global model, then the sample-count-weighted average (one ``all_reduce``) is the new global.
    """
    c = cfg.collab
    assert c is not None
    _check_world(cfg, ctx)
    any_data = next(iter(clients.values())) if clients else test
    global_model = make_model(cfg, cfg.model.name, any_data, cfg.train.seed, ctx.device)
    _broadcast_model(global_model, ctx)
    clock = FaultClock(cfg, ctx)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for rnd in range(c.rounds):
        selected = select_clients(num_clients, c.fraction, cfg.train.seed, rnd)
        mine = [k for k in selected if k in clients]
        locals_, counts, losses, probs = [], [], [], []
        for k in mine:
            local, loss = local_update(global_model, clients[k], cfg, k, rnd, ctx.device, clock)
            locals_.append(local)
            counts.append(len(clients[k]))
            losses.append(loss)
            probs.append(predict_probs(local, test, cfg.train.eval_batch_size, ctx.device))
        global_model.load_state_dict(_allreduce_weighted(locals_, counts, global_model, ctx))
        history.append(_round_record(rnd, selected, global_model, mine, probs, losses, test, cfg, ctx, t0))
    result = _fed_result("fedavg", cfg, ctx, history, t0)
    if keep_state:  # for tests: the final global parameters
        result["state"] = {k: v.detach().cpu().clone() for k, v in global_model.state_dict().items()}
    return result


def run_local_sgd(
    cfg: TrainConfig, ctx: DistContext, data: ShardData, test: ShardData, *, keep_state: bool = False
) -> dict[str, Any]:
    """Periodic model averaging: each rank trains on its own data, models averaged (equal weights)
    every ``collab.sync_steps`` steps (0: every ``local_epochs`` epochs); optimizer state persists.
    """
    c = cfg.collab
    assert c is not None
    _check_world(cfg, ctx)
    model = make_model(cfg, cfg.model.name, data, cfg.train.seed, ctx.device)
    _broadcast_model(model, ctx)
    opt, sched = make_optimizer(model, cfg)
    clock = FaultClock(cfg, ctx)
    seed = client_shuffle_seed(cfg.train.seed, ctx.global_rank)
    steps_per_epoch = -(-len(data) // cfg.train.batch_size)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    # Every rank must average at the same step, whatever its shard size.
    per_round = c.sync_steps or all_reduce_min_int(steps_per_epoch * c.local_epochs, ctx)
    stream = _endless_batches(data, cfg.train.batch_size, seed, steps_per_epoch)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for rnd in range(c.rounds):
        total = 0.0
        for _ in range(per_round):
            clock.before_step()
            x, y = next(stream)
            loss = F.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        probs = predict_probs(model, test, cfg.train.eval_batch_size, ctx.device)
        model.load_state_dict(_allreduce_weighted([model], [1.0], model, ctx))
        rec = _round_record(
            rnd,
            list(range(ctx.world_size)),
            model,
            [ctx.global_rank],
            [probs],
            [total / per_round],
            test,
            cfg,
            ctx,
            t0,
        )
        rec["steps_per_round"] = per_round
        history.append(rec)
    result = _fed_result("local_sgd", cfg, ctx, history, t0)
    if keep_state:  # for tests: the final averaged parameters
        result["state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result


def _endless_batches(
    data: ShardData, batch: int, seed: int, steps_per_epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        for step, xy in enumerate(iter_batches(data, batch, shuffle=True, seed=seed, epoch=epoch)):
            if step >= steps_per_epoch:
                break
            yield xy
        epoch += 1


def _round_record(
    rnd: int,
    selected: list[int],
    global_model: nn.Module,
    mine: list[int],
    probs: list[torch.Tensor],
    losses: list[float],
    test: ShardData,
    cfg: TrainConfig,
    ctx: DistContext,
    t0: float,
) -> dict[str, Any]:
    """Global accuracy plus the spread of the clients' local models before averaging (client drift)."""
    gathered = all_gather_objects(list(zip(mine, probs, losses, strict=True)), ctx)
    by_client = sorted((item for part in gathered for item in part), key=lambda item: item[0])
    global_probs = predict_probs(global_model, test, cfg.train.eval_batch_size, ctx.device)
    local = peer_metrics([p for _, p, _ in by_client], test.labels)
    return {
        "round": rnd + 1,
        "clients": selected,
        "global_acc": accuracy(global_probs, test.labels),
        "fused_acc": accuracy(global_probs, test.labels),
        "client_acc": local["peer_acc"],
        "mean_client_acc": local["mean_peer_acc"],
        "client_ensemble_acc": local["ensemble_acc"],
        "disagreement": local["disagreement"],
        "pairwise_kl": local["pairwise_kl"],
        "train_loss": sum(loss for _, _, loss in by_client) / len(by_client),
        "elapsed_s": time.perf_counter() - t0,
    }


def _fed_result(
    mode: str, cfg: TrainConfig, ctx: DistContext, history: list[dict[str, Any]], t0: float
) -> dict[str, Any]:
    c = cfg.collab
    assert c is not None
    return {
        "mode": mode,
        "peers": [cfg.model.name],
        "history": history,
        "final": dict(history[-1], fusion="average"),
        "round_to_target": _first_reaching(history, "global_acc", "round", c.target_accuracy),
        "train_s": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------
# Entry point handed to TorchDistributor
# ----------------------------------------------------------------------------------------------


def load_test(cfg: TrainConfig) -> ShardData:
    """The test split: ``data.test`` when set, else the training shards' test split (all shards)."""
    source = cfg.data.test or cfg.data.shards
    return load_shard(source, cfg.data.test_split, None)


def run(cfg: TrainConfig, ctx: DistContext, *, keep_state: bool = False) -> dict[str, Any]:
    """Load this rank's data for ``collab.mode`` and run it inside an existing process group.

    ``keep_state``: the result also holds this rank's final parameters (``state``).
    """
    c = cfg.collab
    if c is None:
        raise ValueError("[collab] section missing: collaborative training needs collab.mode")
    if c.weight < 0:
        raise ValueError("collab.weight: must be >= 0 (0 = independent peers)")
    test = load_test(cfg)
    if c.mode == "dml":
        train = load_shard(cfg.data.shards, cfg.data.train_split, None)
        return run_dml(cfg, ctx, train, test, keep_state=keep_state)
    k = num_shards(cfg.data.shards, cfg.data.train_split)
    if k < ctx.world_size:
        raise ValueError(
            f"data.shards {cfg.data.shards} has {k} {cfg.data.train_split} shards for {ctx.world_size} ranks: "
            "every rank needs at least one client; lower launch.num_processes or re-shard with more --shards"
        )
    mine = hosted_clients(k, ctx)
    if c.mode == "fedavg":
        clients = {i: load_shard(cfg.data.shards, cfg.data.train_split, i) for i in mine}
        return run_fedavg(cfg, ctx, clients, k, test, keep_state=keep_state)
    parts = [load_shard(cfg.data.shards, cfg.data.train_split, i) for i in mine]
    return run_local_sgd(cfg, ctx, concat_shards(parts), test, keep_state=keep_state)


def _limit_cpu_threads(ctx: DistContext) -> None:
    """One intra-op thread per CPU rank unless the user set OMP_NUM_THREADS.

    torchrun sets OMP_NUM_THREADS=1 only for several local ranks; a single rank then spins
    threads over batches of a few KB. Measured on a busy 2-core machine: 5 DML epochs on digits
    took 5.5 s with one thread and 30 s with two.
    """
    if ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def main(cfg: TrainConfig) -> dict[str, Any] | None:
    """What every rank runs: join the group, train, return the result (rank 0) or None."""
    with distributed(use_gpu=cfg.launch.use_gpu, timeout_s=cfg.launch.timeout_s) as ctx:
        _limit_cpu_threads(ctx)
        result = run(cfg, ctx, keep_state=True)
        result["peer_models"] = _peer_models(cfg, result, ctx)
        result["world_size"] = ctx.world_size
        result["backend"] = ctx.backend
        barrier(ctx)
    return result if ctx.is_main else None


def _peer_models(cfg: TrainConfig, result: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """What ``peers.pt`` holds (see :func:`training.inference.peer_models_document`), taking
    ``state`` out of ``result``: every DML peer, or the one global model of FedAvg / local SGD."""
    states = all_gather_objects(result.pop("state"), ctx)
    manifest = Manifest.read(cfg.data.shards, kind="images")
    if result["mode"] == "dml":
        names, fingerprints = list(result["peers"]), list(result["init_fingerprints"])
    else:
        states, names = states[:1], [cfg.model.name]
        fingerprints = [init_fingerprint(states[0])]
    shape = tuple(int(d) for d in manifest.extra["feature_shape"])
    return peer_models_document(states, names, fingerprints, shape, int(manifest.extra["num_classes"]))


def main_many(cfgs: Sequence[TrainConfig]) -> list[dict[str, Any]] | None:
    """Run several configs one after another in ONE process group (one launch for many arms/seeds).

    All configs must agree on the launch section; used by the comparison command, where paying the
    launch cost once instead of once per (arm, seed) is most of the saving.
    """
    if not cfgs:
        return []
    launch = cfgs[0].launch
    if any(c.launch != launch for c in cfgs):
        raise ValueError("main_many: every config must have the same [launch] section")
    results = []
    with distributed(use_gpu=launch.use_gpu, timeout_s=launch.timeout_s) as ctx:
        _limit_cpu_threads(ctx)
        for cfg in cfgs:
            result = run(cfg, ctx)
            result["world_size"] = ctx.world_size
            result["backend"] = ctx.backend
            results.append(result)
        barrier(ctx)
    return results if ctx.is_main else None
