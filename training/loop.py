"""Data-parallel training loop (DDP or FSDP2), run on every rank.

Entry points:

- :func:`train` ``(cfg) -> result dict``: what the launcher hands to TorchDistributor (module
  level, one picklable argument, small picklable result).
- ``python -m training.loop --config conf/train/X.toml [--set k=v ...]``: the same under a plain
  ``torchrun`` (no Spark), or in one process.

Data: rank r of W trains on shards r, r+W, r+2W, ... of the training split; the global batch
``train.batch_size`` is split evenly (each rank takes batch_size / W), so one DDP/FSDP step
averages gradients over exactly ``batch_size`` samples, like one process with that batch. Every
rank takes the same number of steps per epoch (the minimum over ranks, full batches only),
because a rank that runs out early would leave the others waiting in a collective. Validation
and test sets are read whole by every rank and evaluated in interleaved slices, counts summed.

At world size 1 the ``ddp`` strategy skips the DDP wrapper (there is nobody to talk to);
``fsdp`` still applies ``fully_shard``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contracts.heartbeat import STARTING, Heartbeat
from contracts.manifest import Manifest
from training import checkpoint, report, tracking
from training.config import TrainConfig, config_from_argv
from training.data import ShardData, iter_batches, load_shard
from training.dist import DistContext, all_reduce_min_int, all_reduce_sum, distributed
from training.faults import maybe_fail
from training.models import build_model, shard_units
from training.optim import build_optimizer, training_step

# ---------------------------------------------------------------------------------------------
# Building blocks (also used by collaborative training; the optimizer and the step: training.optim).
# ---------------------------------------------------------------------------------------------


def has_split(shards_dir: str, split: str) -> bool:
    """Whether ``shards_dir`` has ``split`` with at least one shard."""
    return Manifest.read(shards_dir, kind="images").num_shards(split) > 0


def concat_shards(parts: Sequence[ShardData]) -> ShardData:
    """Several shards as one (same schema)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return ShardData(
        features=torch.cat([p.features for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        ids=torch.cat([p.ids for p in parts]),
        num_classes=first.num_classes,
        feature_shape=first.feature_shape,
    )


def load_rank_data(shards_dir: str, split: str, ctx: DistContext) -> ShardData:
    """This rank's training data: shards global_rank, global_rank + W, ... of ``split``."""
    n = Manifest.read(shards_dir, kind="images").num_shards(split)
    if n < ctx.world_size:
        raise ValueError(
            f"data.shards: {shards_dir} has {n} {split!r} shards but launch.num_processes={ctx.world_size}; "
            f"re-shard with `spark-collab shard ... --shards {ctx.world_size}` or lower launch.num_processes"
        )
    if ctx.world_size == 1:
        return load_shard(shards_dir, split, None)
    return concat_shards(
        [load_shard(shards_dir, split, i) for i in range(ctx.global_rank, n, ctx.world_size)]
    )


def wrap_model(model: nn.Module, strategy: str, ctx: DistContext) -> nn.Module:
    """Move to the rank's device and apply the data-parallel strategy (ddp | fsdp)."""
    model = model.to(ctx.device)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        # Each parameter-owning layer is its own unit (gathered just before use, freed after);
        # the root call covers whatever is left.
        for unit in shard_units(model):
            if unit is not model:
                fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if strategy == "ddp":
        if ctx.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    raise ValueError(f"train.strategy: unknown strategy {strategy!r}; choose ddp or fsdp")


def autocast_for(ctx: DistContext, bf16: bool) -> Any:
    """bf16 autocast on the rank's device when asked for; a no-op context otherwise."""
    if not bf16:
        return nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ShardData, ctx: DistContext, batch_size: int, bf16: bool = False
) -> float:
    """Accuracy of ``model`` on all of ``data``, every rank taking an interleaved slice.

    Every rank runs the same number of forward passes (possibly on empty slices) because FSDP's
    forward is itself a collective.
    """
    model.eval()
    n = len(data)
    per_round = batch_size * ctx.world_size
    rounds = math.ceil(n / per_round)
    correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
    for i in range(rounds):
        start = i * per_round + ctx.global_rank * batch_size
        x = data.features[start : start + batch_size].to(ctx.device, non_blocking=True)
        y = data.labels[start : start + batch_size].to(ctx.device, non_blocking=True)
        with autocast_for(ctx, bf16):
            logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
    (total_correct,) = all_reduce_sum([float(correct.item())], ctx)
    model.train()
    return total_correct / n if n else float("nan")


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------


def run_training(cfg: TrainConfig, ctx: DistContext, t_enter: float | None = None) -> dict[str, Any]:
    """Train per ``cfg`` inside an initialised process group; returns the result dict (all ranks)."""
    t_enter = t_enter if t_enter is not None else time.time()
    run_dir = Path(cfg.run.dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    train_data = load_rank_data(cfg.data.shards, cfg.data.train_split, ctx)
    val_data = (
        load_shard(cfg.data.shards, cfg.data.val_split)
        if has_split(cfg.data.shards, cfg.data.val_split)
        else None
    )
    test_dir = cfg.data.test or cfg.data.shards
    test_data = (
        load_shard(test_dir, cfg.data.test_split) if has_split(test_dir, cfg.data.test_split) else None
    )

    torch.manual_seed(cfg.train.seed)
    base = build_model(cfg.model.name, train_data.feature_shape, train_data.num_classes, cfg.model)
    model = wrap_model(base, cfg.train.strategy, ctx)
    # Steps per epoch first: a schedule over the whole run (cosine) needs the total.
    local_batch = cfg.train.batch_size // ctx.world_size
    steps = all_reduce_min_int(len(train_data) // local_batch, ctx)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size}: a rank has fewer than {local_batch} training samples; "
            "lower train.batch_size"
        )
    optimizer, scheduler = build_optimizer(
        model.parameters(), cfg.optim, total_steps=steps * cfg.train.epochs
    )

    heartbeat = Heartbeat.from_environment(ctx.global_rank)
    heartbeat.beat(STARTING, force=True)
    start_epoch, step, resumed_from = 1, 0, None
    # Where a checkpoint taken in the middle of an epoch left off: steps done and running sums.
    resume_epoch_step, resume_sums = 0, {"loss_sum": 0.0, "correct": 0}
    if cfg.run.resume:
        meta = checkpoint.load_checkpoint(run_dir, model, optimizer, scheduler, ctx)
        if meta is not None:
            start_epoch, step, resumed_from = meta["epoch"] + 1, meta["step"], meta["epoch"]
            resume_epoch_step = meta["epoch_step"]
            resume_sums.update(meta["rank_state"])
    records = report.reset_metrics(run_dir, resumed_from or 0) if ctx.is_main else []

    if ctx.is_main:
        print(
            f"training {cfg.model.name} ({sum(p.numel() for p in base.parameters()):,} parameters) with "
            f"{cfg.train.strategy} on {ctx.world_size} x {ctx.device.type}: {steps} steps/epoch, "
            f"global batch {cfg.train.batch_size}",
            flush=True,
        )

    model.train()
    first_step_time: float | None = None
    t_train0 = time.time()
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
        skip = resume_epoch_step if epoch == start_epoch else 0
        loss_sum = torch.tensor(
            resume_sums["loss_sum"] if skip else 0.0, dtype=torch.float64, device=ctx.device
        )
        correct = torch.tensor(resume_sums["correct"] if skip else 0, dtype=torch.int64, device=ctx.device)
        batches = iter_batches(
            train_data, local_batch, shuffle=True, seed=cfg.train.seed, epoch=epoch, drop_last=True
        )
        # The batch order depends only on (seed, epoch): skipping the steps already taken resumes
        # the epoch exactly where its checkpoint was written.
        for epoch_step, (x_cpu, y_cpu) in zip(
            range(skip, steps), itertools.islice(batches, skip, None), strict=False
        ):
            heartbeat.beat(step)
            maybe_fail(cfg.fault, ctx.global_rank, step)
            if first_step_time is None:
                first_step_time = time.time()
            x = x_cpu.to(ctx.device, non_blocking=True)
            y = y_cpu.to(ctx.device, non_blocking=True)
            logits, loss = training_step(
                model, optimizer, scheduler, x, y, autocast=autocast_for(ctx, cfg.train.bf16)
            )
            step += 1
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.double() * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()
            every = cfg.run.checkpoint_every
            if cfg.run.checkpoint and every and step % every == 0 and epoch_step + 1 < steps:
                checkpoint.save_checkpoint(
                    run_dir,
                    model,
                    optimizer,
                    scheduler,
                    epoch - 1,
                    step,
                    ctx,
                    epoch_step=epoch_step + 1,
                    rank_state={"loss_sum": float(loss_sum.item()), "correct": int(correct.item())},
                    keep=cfg.run.keep_checkpoints,
                )
        heartbeat.beat(step, force=True)
        loss_total, correct_total = all_reduce_sum([float(loss_sum.item()), float(correct.item())], ctx)
        epoch_time = time.perf_counter() - t_epoch
        cpu_time = time.process_time() - cpu_epoch  # this rank's CPU seconds: robust on busy machines
        seen = steps * cfg.train.batch_size
        val_acc = (
            evaluate(model, val_data, ctx, cfg.train.eval_batch_size, cfg.train.bf16) if val_data else None
        )
        rec = {
            "epoch": epoch,
            "step": step,
            "train_loss": loss_total / seen,
            "train_accuracy": correct_total / seen,
            "val_accuracy": val_acc,
            "samples_per_s": seen / epoch_time,
            "epoch_time_s": epoch_time,
            "cpu_time_s": cpu_time,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": time.time() - t_train0,
        }
        if cfg.run.checkpoint:
            checkpoint.save_checkpoint(
                run_dir, model, optimizer, scheduler, epoch, step, ctx, keep=cfg.run.keep_checkpoints
            )
        if ctx.is_main:
            records.append(rec)
            report.append_metrics(run_dir, rec)
            tracking.log_metrics(rec, step=epoch)
            print(report.progress_line(rec, cfg.train.epochs), flush=True)

    test_acc = (
        evaluate(model, test_data, ctx, cfg.train.eval_batch_size, cfg.train.bf16) if test_data else None
    )
    t_end = time.time()
    last = records[-1] if records else {}
    result: dict[str, Any] = {
        "model": cfg.model.name,
        "strategy": cfg.train.strategy,
        "world_size": ctx.world_size,
        "device": ctx.device.type,
        "backend": ctx.backend,
        "epochs": cfg.train.epochs,
        "steps": step,
        "resumed_from_epoch": resumed_from,
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "val_accuracy": last.get("val_accuracy"),
        "test_accuracy": test_acc,
        "test_source": str(test_dir) if test_data is not None else None,
        "test_samples": len(test_data) if test_data is not None else 0,
        "samples_per_s": (sum(r["samples_per_s"] for r in records[1:]) / len(records[1:]))
        if len(records) > 1
        else last.get("samples_per_s"),
        "timings": {
            "rank_start_unix": t_enter,
            "first_step_unix": first_step_time,
            "end_unix": t_end,
            "setup_s": (first_step_time or t_end) - t_enter,
            "total_s": t_end - t_enter,
        },
        "run_dir": str(run_dir),
        "config": cfg.to_dict(),
    }
    if ctx.is_main:
        if test_acc is not None:
            print(f"test accuracy {test_acc:.4f} on {len(test_data)} samples from {test_dir}", flush=True)  # type: ignore[arg-type]
        if cfg.run.plots:
            report.plot_curves(
                run_dir, records, f"{cfg.model.name} / {cfg.train.strategy} / {ctx.world_size} ranks"
            )
        report.write_result(run_dir, result)
        tracking.log_artifacts(run_dir)
        if cfg.run.checkpoint:
            tracking.log_checkpoint_model(cfg.model, run_dir, train_data)
    return result


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Rank entry point: join the process group, train, leave. Returns the result dict."""
    t_enter = time.time()
    with (
        distributed(cfg.launch.use_gpu, cfg.launch.collective_timeout_s) as ctx,
        tracking.run(cfg, is_main=ctx.is_main, kind="train"),
    ):
        return run_training(cfg, ctx, t_enter)


def main(argv: Sequence[str] | None = None) -> int:
    """``[torchrun ...] python -m training.loop --config X.toml [--set k=v ...]``."""
    cfg = config_from_argv("python -m training.loop", main.__doc__, argv)
    if cfg is None:
        return 2
    result = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: result[k] for k in ("test_accuracy", "val_accuracy", "samples_per_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
