"""What the collaborative runners share: peer identities and seeds, models, evaluation, the step clock.

The runners themselves live in :mod:`training.collab_dml` (deep mutual learning) and
:mod:`training.collab_averaging` (FedAvg / FedProx, local SGD); their checkpoints in
:mod:`training.collab_checkpoint`; the entry points in :mod:`training.collab`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from contracts.heartbeat import STARTING, Heartbeat
from training.config import TrainConfig
from training.data import ShardData, iter_batches
from training.dist import DistContext
from training.faults import maybe_fail
from training.fusion import accuracy, disagreement, ensemble_probs, mean_pairwise_kl
from training.models import build_model


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


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict (safe to keep, pickle and send to other ranks)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


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


def check_world(cfg: TrainConfig, ctx: DistContext) -> None:
    """The process group has the size the config was checked for (one peer or client group per rank)."""
    if cfg.launch.num_processes != ctx.world_size:
        raise RuntimeError(
            f"launch.num_processes={cfg.launch.num_processes} but this group has {ctx.world_size} ranks"
        )


def first_reaching(history: list[dict[str, Any]], key: str, index: str, target: float) -> int | None:
    """The ``index`` (epoch or round) of the first record whose ``key`` reaches ``target`` (0: not asked)."""
    if target <= 0:
        return None
    for rec in history:
        if rec[key] >= target:
            return int(rec[index])
    return None


class StepClock:
    """This rank's optimizer steps, counted across epochs, rounds and hosted clients.

    Before every step it beats the rank's heartbeat (so the launcher's stall watch sees progress,
    as in data-parallel training) and gives ``[fault]`` its chance to fire at the same kind of
    step as there. A resumed run sets :attr:`step` to the checkpoint's count, so that a fault and
    a heartbeat name the same step in every attempt.
    """

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.fault = cfg.fault
        self.rank = ctx.global_rank
        self.step = 0
        self.heartbeat = Heartbeat.from_environment(ctx.global_rank)
        self.heartbeat.beat(STARTING, force=True)

    def before_step(self) -> None:
        self.heartbeat.beat(self.step)
        maybe_fail(self.fault, self.rank, self.step)
        self.step += 1

    def round_done(self) -> None:
        """Record progress after a round's (or epoch's) evaluation and averaging, which take no steps."""
        self.heartbeat.beat(self.step, force=True)
