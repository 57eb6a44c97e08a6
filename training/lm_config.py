"""The GPT training config: its own root, built by the loader of :mod:`training.config`.

It shares the ``[launch]``, ``[run]`` and ``[fault]`` sections with the classifier config and has
its own ``[model]``, ``[optim]``, ``[train]`` and ``[data]`` (token shards have no test directory or
label splits), so that ``--describe`` lists only keys the GPT job reads. Each section of its own
checks its ranges in ``validate()``; the shared sections are checked by :mod:`training.shared_checks`
(the same checks as the classifier config's); the root's ``validate()`` runs them all plus the
checks that span sections. No torch import here: the driver reads and checks this config before it
starts Spark.

``train.batch_size`` is the batch of one model: data-parallel training trains one model on all
ranks, so it is split over them; in collaborative training ([collab]) every rank holds a replica of
its own, which takes the whole batch.

The vocabulary size is not a key: it comes from the token shards' manifest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from training.config import FaultConfig, LaunchConfig, RunConfig
from training.shared_checks import check_fault, check_launch, check_run

MODEL_NAME = "gpt"
STRATEGIES = ("ddp", "fsdp")


def _bad(key: str, msg: str) -> None:
    raise ValueError(f"{key}: {msg}")


@dataclass
class GPTModelConfig:
    name: str = MODEL_NAME
    """Model name; "gpt" selects this config and the decoder-only transformer."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 128
    """Width of the residual stream (embedding size)."""
    block_size: int = 64
    """Context length in tokens: training windows and the longest context at generation."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (0 disables it)."""
    bias: bool = False
    """Biases in the linear layers and LayerNorms (GPT-2 has them; false is slightly better and faster)."""

    def validate(self) -> None:
        if self.name != MODEL_NAME:
            _bad(
                "model.name",
                f"this config is for {MODEL_NAME!r}; classifier models use the other [model] keys",
            )
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, key) < 1:
                _bad(f"model.{key}", "must be >= 1")
        if self.n_embd % self.n_head:
            _bad("model.n_head", f"must divide model.n_embd={self.n_embd}")
        if not 0 <= self.dropout < 1:
            _bad("model.dropout", "must be in [0, 1)")


@dataclass
class TokenDataConfig:
    shards: str = "runs/corpus/shakespeare_char"
    """Output directory of ``spark-collab corpus`` (token shards, manifest.json, tokenizer.json)."""
    train_split: str = "train"
    """Split trained on; every rank samples windows from all of its shards."""
    val_split: str = "val"
    """Split of the validation loss; skipped when the shards have no such split."""


@dataclass
class AdamWConfig:
    lr: float = 1e-3
    """Peak learning rate, reached at the end of the warmup."""
    min_lr: float = 1e-4
    """Learning rate at the end of the cosine decay (and after it)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW (beta1, beta2)."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to 2-D weights (matrices, embeddings) only; biases and norms get none."""
    warmup_iters: int = 100
    """Iterations of linear warmup from lr / (warmup_iters + 1) up to lr."""
    lr_decay_iters: int = 2000
    """Iteration at which the cosine decay reaches min_lr (usually train.max_iters)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value before each step (0 disables clipping)."""

    def validate(self) -> None:
        if self.lr <= 0:
            _bad("optim.lr", "must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            _bad("optim.min_lr", f"must be in [0, optim.lr={self.lr}]")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _bad("optim.betas", "expected two numbers in [0, 1), e.g. [0.9, 0.99]")
        if self.weight_decay < 0:
            _bad("optim.weight_decay", "must be >= 0")
        if self.warmup_iters < 0:
            _bad("optim.warmup_iters", "must be >= 0")
        if self.lr_decay_iters <= self.warmup_iters:
            _bad("optim.lr_decay_iters", f"must be > optim.warmup_iters={self.warmup_iters}")
        if self.grad_clip < 0:
            _bad("optim.grad_clip", "must be >= 0 (0 disables clipping)")

    def lr_at(self, it: int) -> float:
        """Learning rate of iteration ``it`` (0-based): linear warmup, cosine decay, then min_lr."""
        if it < self.warmup_iters:
            return self.lr * (it + 1) / (self.warmup_iters + 1)
        if it >= self.lr_decay_iters:
            return self.min_lr
        progress = (it - self.warmup_iters) / (self.lr_decay_iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


@dataclass
class LMTrainSection:
    max_iters: int = 2000
    """Optimizer steps to train for (the run is counted in iterations, not epochs)."""
    eval_interval: int = 250
    """Evaluate train and val loss (and checkpoint) every this many iterations, and at the end."""
    eval_iters: int = 20
    """Batches of fixed windows per loss estimate (the same windows at every evaluation); a batch is
    batch_size windows, or in collaborative training batch_size x num_processes (every replica's batch)."""
    log_interval: int = 100
    """Print and record train loss, tokens/s and MFU every this many iterations."""
    batch_size: int = 12
    """Sequences of block_size tokens in one optimizer step of one model. Data-parallel training
    (`spark-collab train`) splits that batch over its ranks (num_processes must divide it); in
    collaborative training ([collab]) every replica is its own model and takes the whole batch on its rank."""
    micro_batch: int = 0
    """Sequences per rank per forward pass; 0: the rank's whole part of the batch, no accumulation
    (batch_size / num_processes data-parallel, batch_size collaborative). Smaller values accumulate
    gradients over (that part / micro_batch) passes."""
    seed: int = 1337
    """Seed of the initialisation, dropout and the choice of training windows."""
    init_from: str = ""
    """Warm start: the directory of an earlier GPT run whose model (checkpoint.pt) this run starts from, on
    every rank, replica and peer; same model keys and vocabulary. Only the weights carry over: optimizer,
    schedule and iterations start fresh. Empty: a random init from seed."""
    strategy: str = "ddp"
    """Data-parallel strategy: ddp (DistributedDataParallel) or fsdp (FSDP2, fully_shard per block)."""
    bf16: bool = False
    """bf16 autocast for forward and loss (GPU only; CPU runs stay float32)."""
    compile: bool = False
    """Wrap the model in torch.compile (pays a compile time at the first steps)."""
    peak_tflops: float = 0.0
    """Peak TFLOP/s per rank for the MFU estimate; 0: 989 on H100/H200, 312 on A100 (bf16 dense), and
    on CPU 0.08 per thread (AVX2: 2 FMA x 8 float32 lanes x 2 at an assumed 2.5 GHz)."""

    def validate(self) -> None:
        for key in ("max_iters", "eval_interval", "eval_iters", "log_interval", "batch_size"):
            if getattr(self, key) < 1:
                _bad(f"train.{key}", "must be >= 1")
        if self.micro_batch < 0:
            _bad("train.micro_batch", "must be >= 0 (0 = the rank's whole part of the batch)")
        if self.strategy not in STRATEGIES:
            _bad(
                "train.strategy",
                f"unknown strategy {self.strategy!r}; choose one of: {', '.join(STRATEGIES)}",
            )
        if self.peak_tflops < 0:
            _bad("train.peak_tflops", "must be >= 0 (0 = the default for the device)")


COLLAB_MODES = ("diloco", "fedavg", "dml", "independent")
# Modes whose replicas share outer parameters (same init, periodic outer step); the rest are peers.
OUTER_MODES = ("diloco", "fedavg")
COLLAB_FUSIONS = ("ensemble", "average")
COLLAB_PARTITIONS = ("windows", "shards")


@dataclass
class LMCollabConfig:
    mode: str = "diloco"
    """diloco (inner AdamW, outer Nesterov SGD on the mean delta), fedavg (the same loop, plain averaging),
    dml (codistillation: KL toward stale copies of the peers), independent (no exchange at all)."""
    inner_steps: int = 50
    """diloco / fedavg: inner AdamW steps H of each replica between two outer steps."""
    outer_lr: float = 0.7
    """diloco: learning rate of the outer SGD on the averaged delta (fedavg always uses 1.0)."""
    outer_momentum: float = 0.9
    """diloco: momentum of the outer SGD (fedavg always uses 0)."""
    outer_nesterov: bool = True
    """diloco: Nesterov momentum for the outer SGD."""
    weight: float = 1.0
    """dml: weight of the per-token KL term toward the peers' predictions (0: independent training)."""
    temperature: float = 1.0
    """dml: softmax temperature of the KL term (the term is scaled by temperature**2)."""
    exchange_every: int = 1
    """dml: gather the peers' parameters every this many steps; between exchanges the copies are stale."""
    same_init: bool = False
    """dml / independent: start every peer from train.seed (needed for fusion = "average"); false: seed + 1000 r.
    diloco and fedavg replicas always share the init."""
    fusion: str = "ensemble"
    """dml / independent: how the peers are fused at the end: ensemble (mean of probabilities) or average
    (mean of parameters; needs same_init)."""
    partition: str = "windows"
    """What each replica reads: windows (slice r of every global batch drawn from the whole split, IID, the
    same windows DDP reads) or shards (only train shards r, r + W, ...: non-IID when shards are source files)."""

    def validate(self) -> None:
        if self.mode not in COLLAB_MODES:
            _bad("collab.mode", f"unknown mode {self.mode!r}; choose one of: {', '.join(COLLAB_MODES)}")
        if self.inner_steps < 1:
            _bad("collab.inner_steps", "must be >= 1")
        if self.outer_lr <= 0:
            _bad("collab.outer_lr", "must be > 0")
        if not 0 <= self.outer_momentum < 1:
            _bad("collab.outer_momentum", "must be in [0, 1)")
        if self.weight < 0:
            _bad("collab.weight", "must be >= 0 (0 = independent peers)")
        if self.temperature <= 0:
            _bad("collab.temperature", "must be > 0")
        if self.exchange_every < 1:
            _bad("collab.exchange_every", "must be >= 1 step")
        if self.fusion not in COLLAB_FUSIONS:
            _bad(
                "collab.fusion", f"unknown fusion {self.fusion!r}; choose one of: {', '.join(COLLAB_FUSIONS)}"
            )
        if self.partition not in COLLAB_PARTITIONS:
            _bad(
                "collab.partition",
                f"unknown partition {self.partition!r}; choose one of: {', '.join(COLLAB_PARTITIONS)}",
            )
        if self.mode in ("dml", "independent") and self.fusion == "average" and not self.same_init:
            _bad(
                "collab.fusion",
                "average needs peers that share an init (parameters of independently initialised networks "
                "do not line up); set collab.same_init = true or use fusion = 'ensemble'",
            )


@dataclass
class GPTConfig:
    model: GPTModelConfig = field(default_factory=GPTModelConfig)
    """[model] section."""
    data: TokenDataConfig = field(default_factory=TokenDataConfig)
    """[data] section."""
    optim: AdamWConfig = field(default_factory=AdamWConfig)
    """[optim] section."""
    train: LMTrainSection = field(default_factory=LMTrainSection)
    """[train] section."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """[launch] section."""
    run: RunConfig = field(default_factory=lambda: RunConfig(dir="runs/train/gpt"))
    """[run] section; checkpoints are written at every evaluation and every run.checkpoint_every
    iterations (collab DiLoCo/FedAvg: on the first outer step at or after each multiple)."""
    fault: FaultConfig = field(default_factory=FaultConfig)
    """[fault] section; fail_at_step counts iterations."""
    collab: LMCollabConfig | None = None
    """[collab] section; only in collaborative GPT configs (``spark-collab collab``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def rank_batch(self) -> int:
        """Sequences one rank takes per optimizer step: its share of the one data-parallel model's
        batch, or in collaborative training the whole batch of the replica it holds."""
        if self.collab is not None:
            return self.train.batch_size
        return self.train.batch_size // int(self.launch.num_processes)

    def micro_batch(self) -> int:
        """Sequences per rank per forward pass."""
        return self.train.micro_batch or self.rank_batch()

    def validate(self) -> GPTConfig:
        """Every section's own checks, then the ones that span sections; ValueError names the key."""
        for section in (self.model, self.optim, self.train):
            section.validate()
        if self.collab is not None:
            self.collab.validate()
        if not self.data.shards:
            _bad("data.shards", "set it to the output directory of `spark-collab corpus`")
        if self.train.bf16 and not self.launch.use_gpu:
            _bad("train.bf16", "bf16 autocast is for GPU runs (launch.use_gpu=true); CPU runs stay float32")
        collaborative = self.collab is not None
        check_launch(self.launch, collaborative=collaborative)
        check_run(
            self.run, step_unit="iterations", checkpoints_at="evaluations", dir_example="runs/train/gpt_char"
        )
        world = self.launch.num_processes
        check_fault(self.fault, world)
        if isinstance(world, str):
            return self  # "auto": the checks below run again once the driver has resolved the number
        if not collaborative and self.train.batch_size % world:
            _bad(
                "train.batch_size",
                f"batch {self.train.batch_size} must be a multiple of launch.num_processes={world} "
                "(each rank takes an equal share of the one model's batch)",
            )
        if self.rank_batch() % self.micro_batch():
            share = "train.batch_size" if collaborative else "train.batch_size / launch.num_processes"
            _bad(
                "train.micro_batch",
                f"{self.train.micro_batch} must divide the per-rank batch {self.rank_batch()} ({share})",
            )
        return self
