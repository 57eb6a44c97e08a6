"""Collaboration by parameter averaging in rounds: FedAvg / FedProx and local SGD.

- ``fedavg``: E local epochs per round on the client's own shard, then the sample-count-weighted
  average of the selected clients' parameters becomes everyone's model (McMahan et al., 2017);
  ``mu > 0`` adds FedProx's proximal term. Several clients may live on one rank.
- ``local_sgd``: periodic model averaging over all ranks with equal weights; every rank keeps its
  optimizer state across rounds.

Both average through :func:`training.aggregate.weighted_average`, the pure function the tests
check, over the clients of every rank in client order. With ``run.checkpoint`` the global model
(and local SGD's optimizer states) are saved after each round; ``run.resume`` continues from there.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.aggregate import proximal_term, select_clients, weighted_average
from training.collab_checkpoint import checkpoint_due, load_round_checkpoint, save_round_checkpoint
from training.collab_common import (
    StepClock,
    check_world,
    client_shuffle_seed,
    cpu_state,
    first_reaching,
    make_model,
    peer_metrics,
    predict_probs,
)
from training.config import TrainConfig
from training.data import ShardData, iter_batches
from training.dist import DistContext, all_gather_objects, all_reduce_min_int
from training.fusion import accuracy
from training.optim import LossFn, build_optimizer, training_step


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
    clock: StepClock | None = None,
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
    opt, sched = build_optimizer(local.parameters(), cfg.optim)
    objective: LossFn = F.cross_entropy
    if c.mu > 0:

        def objective(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, y) + proximal_term(local.parameters(), anchor, c.mu)

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
            _, loss = training_step(local, opt, sched, x.to(device), y.to(device), objective)
            total += loss.item()
            steps += 1
    return local, total / max(steps, 1)


def average_clients(
    models: Sequence[nn.Module], clients: Sequence[int], counts: Sequence[float], ctx: DistContext
) -> dict[str, torch.Tensor]:
    """The weighted average of the given clients' models over every rank, by client id.

    Every rank gathers every client's parameters and computes the same average with
    :func:`weighted_average`, in client order, so the result does not depend on how the clients
    are spread over the ranks. Clients without samples carry no weight and are left out.
    """
    mine = [(k, float(n), cpu_state(m)) for m, k, n in zip(models, clients, counts, strict=True) if n > 0]
    everyone = sorted(itertools.chain.from_iterable(all_gather_objects(mine, ctx)), key=lambda item: item[0])
    if not everyone:
        raise RuntimeError("no samples in the selected clients of this round")
    return weighted_average([state for _, _, state in everyone], [n for _, n, _ in everyone])


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
) -> dict[str, Any]:
    """FedAvg (or FedProx with ``mu > 0``) with ``num_clients`` clients spread over the ranks.

    ``clients`` maps the client ids this rank hosts to their shards. Every round: the fraction C of
    clients chosen by :func:`select_clients` (same answer on every rank), E local epochs each from
    the global model, then the sample-count-weighted average is the new global model (the
    result's ``state``).
    """
    c = cfg.collab
    assert c is not None
    check_world(cfg, ctx)
    any_data = next(iter(clients.values())) if clients else test
    global_model = make_model(cfg, cfg.model.name, any_data, cfg.train.seed, ctx.device)
    _broadcast_model(global_model, ctx)
    clock = StepClock(cfg, ctx)
    history: list[dict[str, Any]] = []
    start_round = 0
    resumed = load_round_checkpoint(cfg, ctx) if cfg.run.resume else None
    if resumed is not None:
        start_round, history = resumed["finished"], list(resumed["shared"]["history"])
        global_model.load_state_dict(resumed["shared"]["model"])
        clock.step = int(resumed["rank"]["step"])
    t0 = time.perf_counter()
    for rnd in range(start_round, c.rounds):
        selected = select_clients(num_clients, c.fraction, cfg.train.seed, rnd)
        mine = [k for k in selected if k in clients]
        locals_, counts, losses, probs = [], [], [], []
        for k in mine:
            local, loss = local_update(global_model, clients[k], cfg, k, rnd, ctx.device, clock)
            locals_.append(local)
            counts.append(len(clients[k]))
            losses.append(loss)
            probs.append(predict_probs(local, test, cfg.train.eval_batch_size, ctx.device))
        global_model.load_state_dict(average_clients(locals_, mine, counts, ctx))
        history.append(_round_record(rnd, selected, global_model, mine, probs, losses, test, cfg, ctx, t0))
        clock.round_done()
        if checkpoint_due(cfg, rnd + 1, c.rounds):
            shared = {"history": history, "model": global_model.state_dict()}
            save_round_checkpoint(cfg, ctx, finished=rnd + 1, step=clock.step, shared=shared, rank_state={})
    return _fed_result("fedavg", cfg, ctx, history, t0, global_model)


def run_local_sgd(cfg: TrainConfig, ctx: DistContext, data: ShardData, test: ShardData) -> dict[str, Any]:
    """Periodic model averaging: each rank trains on its own data, models averaged (equal weights)
    every ``collab.sync_steps`` steps (0: every ``local_epochs`` epochs); optimizer state persists.
    The result's ``state`` is the final averaged model.
    """
    c = cfg.collab
    assert c is not None
    check_world(cfg, ctx)
    model = make_model(cfg, cfg.model.name, data, cfg.train.seed, ctx.device)
    _broadcast_model(model, ctx)
    opt, sched = build_optimizer(model.parameters(), cfg.optim)
    clock = StepClock(cfg, ctx)
    seed = client_shuffle_seed(cfg.train.seed, ctx.global_rank)
    steps_per_epoch = -(-len(data) // cfg.train.batch_size)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    # Every rank must average at the same step, whatever its shard size.
    per_round = c.sync_steps or all_reduce_min_int(steps_per_epoch * c.local_epochs, ctx)
    history: list[dict[str, Any]] = []
    start_round = 0
    resumed = load_round_checkpoint(cfg, ctx) if cfg.run.resume else None
    if resumed is not None:
        start_round, history = resumed["finished"], list(resumed["shared"]["history"])
        model.load_state_dict(resumed["shared"]["model"])
        opt.load_state_dict(resumed["rank"]["optimizer"])
        sched.load_state_dict(resumed["rank"]["scheduler"])
        clock.step = int(resumed["rank"]["step"])
    stream = _endless_batches(data, cfg.train.batch_size, seed, steps_per_epoch, start_round * per_round)
    t0 = time.perf_counter()
    for rnd in range(start_round, c.rounds):
        total = 0.0
        for _ in range(per_round):
            clock.before_step()
            x, y = next(stream)
            _, loss = training_step(model, opt, sched, x.to(ctx.device), y.to(ctx.device))
            total += loss.item()
        probs = predict_probs(model, test, cfg.train.eval_batch_size, ctx.device)
        model.load_state_dict(average_clients([model], [ctx.global_rank], [1.0], ctx))
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
        clock.round_done()
        if checkpoint_due(cfg, rnd + 1, c.rounds):
            save_round_checkpoint(
                cfg,
                ctx,
                finished=rnd + 1,
                step=clock.step,
                shared={"history": history, "model": model.state_dict()},
                rank_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
            )
    return _fed_result("local_sgd", cfg, ctx, history, t0, model)


def _endless_batches(
    data: ShardData, batch: int, seed: int, steps_per_epoch: int, skip: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``steps_per_epoch`` steps per epoch, one epoch after another, from step ``skip``.

    The order depends only on (seed, epoch), so a resumed run continues with exactly the batch
    it would have taken next.
    """
    epoch, skip_in_epoch = divmod(skip, steps_per_epoch)
    while True:
        batches = iter_batches(data, batch, shuffle=True, seed=seed, epoch=epoch)
        yield from itertools.islice(batches, skip_in_epoch, steps_per_epoch)
        skip_in_epoch = 0
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
    mode: str, cfg: TrainConfig, ctx: DistContext, history: list[dict[str, Any]], t0: float, model: nn.Module
) -> dict[str, Any]:
    c = cfg.collab
    assert c is not None
    return {
        "mode": mode,
        "peers": [cfg.model.name],
        "history": history,
        "final": dict(history[-1], fusion="average"),
        "round_to_target": first_reaching(history, "global_acc", "round", c.target_accuracy),
        "train_s": time.perf_counter() - t0,
        "state": cpu_state(model),
    }
