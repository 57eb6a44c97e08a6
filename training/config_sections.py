"""The sections of the training config and the classifier root that composes them.

Plain dataclasses (they pickle, so a config travels to the ranks as one argument); every field
carries its docstring (the string right below it), which ``--describe`` prints. The sections
``[launch]``, ``[run]`` and ``[fault]`` are shared by every config root (the GPT root in
:mod:`training.lm_config` reuses them); their checks are in :mod:`training.shared_checks`, the
classifier root's in :mod:`training.config_checks`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    name: str = "mlp784"
    """Registered model name: mlp784 (the original article's 784-10-10 MLP), mlp (wider MLP), cnn (LeNet-style)."""
    hidden: int = 256
    """Hidden width of the wider ``mlp`` (its two hidden layers); mlp784 and cnn ignore it."""


@dataclass
class DataConfig:
    shards: str = "runs/shards/mnist5k"
    """Output directory of ``spark-collab shard`` (holds manifest.json)."""
    test: str = ""
    """Optional separate shards directory for the test accuracy (e.g. real MNIST t10k); empty: use ``shards``."""
    train_split: str = "train"
    """Split trained on; rank r reads shards r, r+W, ... (W = number of processes)."""
    val_split: str = "val"
    """Split for the per-epoch validation accuracy; skipped when the shards have no such split."""
    test_split: str = "test"
    """Split for the final test accuracy (in ``test`` when set, else in ``shards``); skipped when absent."""


@dataclass
class OptimConfig:
    name: str = "sgd"
    """Optimizer: sgd or adam."""
    lr: float = 0.01
    """Base learning rate."""
    momentum: float = 0.9
    """SGD momentum (sgd only)."""
    nesterov: bool = True
    """Nesterov momentum (sgd only)."""
    decay: float = 1e-6
    """Keras-style time decay per optimizer step: lr_t = lr / (1 + decay * step); 0 disables it."""
    schedule: str = "time"
    """Learning-rate schedule: time (the Keras time decay above) or cosine (lr -> 0 along a half cosine over all steps; decay ignored)."""
    weight_decay: float = 0.0
    """L2 weight decay passed to the optimizer."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas (adam only)."""


@dataclass
class TrainSection:
    epochs: int = 10
    """Number of passes over the training split."""
    batch_size: int = 128
    """Samples in one optimizer step of one model. Data-parallel training splits that batch over its
    W ranks (W must divide it); in collaborative training every peer or client is its own model and
    takes the whole batch on its rank."""
    strategy: str = "ddp"
    """Data-parallel strategy: ddp (DistributedDataParallel) or fsdp (FSDP2 fully_shard)."""
    seed: int = 0
    """Seed for model initialisation and the per-epoch shuffle (the same on every rank)."""
    bf16: bool = False
    """Run forward/loss under bf16 autocast (useful on GPU; parameters and optimizer stay float32)."""
    eval_batch_size: int = 1024
    """Per-rank batch size for validation and test evaluation."""
    max_steps_per_epoch: int = 0
    """Cap on optimizer steps per epoch (0 = no cap); for smoke tests and benchmarks."""


@dataclass
class LaunchConfig:
    num_processes: int | str = 2
    """Number of torch ranks TorchDistributor starts, or "auto" (train only): what Spark offers, i.e. the cores of local[N] / local[*], the task slots of the cluster's executors, or with use_gpu the GPUs Spark assigns."""
    local_mode: bool = True
    """True: ranks run on the driver machine (torchrun); False: one Spark barrier task per rank."""
    use_gpu: bool = False
    """Train on CUDA with NCCL (one GPU per rank); False: CPU with gloo."""
    timeout_s: int = 600
    """Wall-clock limit for the whole launch (every restart included)."""
    collective_timeout_s: int = 300
    """Process-group timeout: a collective (all-reduce, barrier) waiting longer than this fails its rank."""
    max_restarts: int = 0
    """When a rank dies or stalls, relaunch all ranks from the last complete checkpoint, at most this often."""
    stall_timeout_s: int = 300
    """A rank whose progress heartbeat is older than this is stalled: named with its stack, then killed or restarted (0: off)."""


@dataclass
class RunConfig:
    dir: str = "runs/train/default"
    """Run directory: result.json, metrics.jsonl, checkpoints, plots, launch/ (per-rank status)."""
    resume: bool = False
    """Continue from the checkpoint in ``dir`` when there is one (otherwise start fresh)."""
    checkpoint: bool = True
    """Write a checkpoint at the end of every epoch (main rank, atomic, with a SHA-256 record)."""
    checkpoint_every: int = 0
    """Also write a checkpoint every this many optimizer steps (0: at epoch ends only); collab: every this many rounds (DML: epochs), 0 or 1 every round."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep in checkpoints/ (a corrupt latest one falls back to the one before)."""
    plots: bool = True
    """Write loss/accuracy curves as PNG at the end."""
    tracking: str = "none"
    """Experiment tracking: none, or mlflow (the main rank logs params, metrics, plots, result and model to MLFLOW_TRACKING_URI, default ./mlruns; needs the tracking extra)."""


@dataclass
class FaultConfig:
    fail_rank: int = -1
    """Fault injection: the global rank that fails (-1: off)."""
    fail_at_step: int = -1
    """Fault injection: global optimizer step (0-based, counted across epochs) at which it fails."""
    mode: str = "raise"
    """How it fails: raise (an exception), exit (os._exit(1)), kill (SIGKILL to itself) or stall (sleeps forever)."""
    attempts: int = 1
    """In how many attempts of a restarting launch the fault fires (1: the first only, so a restart gets past it)."""


@dataclass
class CollabConfig:
    mode: str = "dml"
    """Collaborative mode: dml (deep mutual learning), fedavg (federated averaging), local_sgd."""
    peers: list[str] = field(default_factory=list)
    """Model names of the peers (one per rank, cycled); empty: every rank uses [model].name."""
    weight: float = 1.0
    """DML: weight of the mutual (KL) term against the cross-entropy term."""
    temperature: float = 1.0
    """DML: softmax temperature for the mutual term."""
    rounds: int = 10
    """FedAvg / local SGD: communication rounds."""
    local_epochs: int = 1
    """FedAvg / local SGD: local epochs between averaging rounds."""
    fraction: float = 1.0
    """FedAvg: fraction of clients taking part in each round."""
    mu: float = 0.0
    """FedProx proximal term weight (0 = plain FedAvg)."""
    fusion: str = "ensemble"
    """DML: how peers are fused at the end: ensemble (average probabilities), average (average parameters; needs same_init), none."""
    target_accuracy: float = 0.0
    """Report the first round (fedavg/local_sgd) or epoch (dml) whose fused test accuracy reaches this (0 = not tracked)."""
    same_init: bool = False
    """DML: start every peer from the same initialisation (needed for fusion = "average"); false: peer r uses seed + 1000 r."""
    sync_steps: int = 0
    """local_sgd: average the models every this many local optimizer steps (0: after every local_epochs epochs)."""


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """[model] section."""
    data: DataConfig = field(default_factory=DataConfig)
    """[data] section."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """[optim] section."""
    train: TrainSection = field(default_factory=TrainSection)
    """[train] section."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """[launch] section."""
    run: RunConfig = field(default_factory=RunConfig)
    """[run] section."""
    fault: FaultConfig = field(default_factory=FaultConfig)
    """[fault] section."""
    collab: CollabConfig | None = None
    """[collab] section; present only in collaborative configs."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML friendly); ``collab`` left out when absent."""
        out = dataclasses.asdict(self)
        if out["collab"] is None:
            del out["collab"]
        return out


# Section name -> dataclass; the one place that lists them.
SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)
}
SECTIONS["collab"] = CollabConfig
STRATEGIES = ("ddp", "fsdp")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("time", "cosine")
TRACKERS = ("none", "mlflow")
COLLAB_MODES = ("dml", "fedavg", "local_sgd")
COLLAB_UNREAD_KEYS = (
    "train.strategy",
    "train.bf16",
    "data.val_split",
    "run.plots",
)
FUSIONS = ("ensemble", "average", "none")
AUTO = "auto"  # launch.num_processes: resolved by the driver from what Spark offers
FAULT_MODES = ("raise", "exit", "kill", "stall")
