"""GPT training loop on token shards (DDP or FSDP2), run on every rank.

Entry points:

- :func:`train` ``(cfg) -> result dict``: what the launcher hands to TorchDistributor
  (``launch("training.lm_loop:train", cfg, ...)``).
- :func:`run_training` ``(cfg, ctx)``: the same inside an existing process group (tests, benches).

One iteration is one optimizer step over ``train.batch_size`` sequences of ``model.block_size``
tokens, whatever the number of ranks: each rank runs ``grad_accum`` forward/backward passes of
``micro_batch`` sequences (see :class:`training.lm_data.BatchSlice`), gradients are averaged over
passes and ranks, clipped, and AdamW steps with the warmup + cosine learning rate of the
iteration. Weight decay applies to 2-D weights only (matrices and embeddings; not biases or
LayerNorm gains).

Every ``train.eval_interval`` iterations (and at the first and last) the train and val losses are
measured on fixed windows, each rank taking a slice and the sums all-reduced; then a checkpoint is
written. Every ``train.log_interval`` iterations a line reports the mean train loss, tokens/s and
an MFU estimate (model FLOPs per token from :meth:`training.gpt.GPT.flops_per_token`, against the
peak in ``train.peak_tflops`` or the device default, printed at the start).

Resume is exact: the windows of an iteration depend on (seed, iteration) only, and the checkpoint
holds model, optimizer, schedule and RNG states (dropout).

With DDP the bytes each rank hands to the gradient all-reduce are counted by a comm hook
(:mod:`training.comm`) and reported as ``comm_bytes`` on log lines, records and in result.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from contracts.atomic import write_json_atomic
from contracts.heartbeat import STARTING, Heartbeat
from contracts.manifest import Manifest
from contracts.rundir import RunDir
from training import checkpoint, lm_report, tracking
from training.comm import CommCounter, count_ddp_gradients
from training.dist import DistContext, all_reduce_sum, distributed
from training.faults import maybe_fail
from training.gpt import GPT, shard_units
from training.lm_config import MODEL_NAME, AdamWConfig, GPTConfig, GPTModelConfig
from training.lm_data import BatchSlice, TokenWindows
from training.lm_init import init_weights
from training.models import build_model

# Nominal peak FLOP/s used for MFU when train.peak_tflops = 0. GPU: bf16 dense tensor-core peaks
# from the vendor data sheets. CPU: AVX2 with two FMA units is 2 x 8 float32 lanes x 2 FLOPs per
# cycle; 2.5 GHz is assumed, so the CPU figure is an estimate against that stated peak.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
CPU_PEAK_TFLOPS_PER_THREAD = 2 * 8 * 2 * 2.5e9 / 1e12


@dataclass
class LogWindow:
    """Wall and CPU clocks of one log interval; evaluations and extra checkpoints are paused out."""

    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)
    iters: int = 0
    paused_wall: float = 0.0
    paused_cpu: float = 0.0

    def wall_s(self) -> float:
        return time.perf_counter() - self.wall0 - self.paused_wall

    def cpu_s(self) -> float:
        """This process's CPU seconds: robust where other jobs share the cores."""
        return time.process_time() - self.cpu0 - self.paused_cpu

    @contextmanager
    def paused(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.paused_wall += time.perf_counter() - wall
            self.paused_cpu += time.process_time() - cpu


def build_gpt(model_cfg: GPTModelConfig, vocab_size: int) -> GPT:
    """The registered "gpt" model for a vocabulary of ``vocab_size`` (from the shards' manifest)."""
    model = build_model(MODEL_NAME, (model_cfg.block_size,), vocab_size, model_cfg)  # type: ignore[arg-type]
    assert isinstance(model, GPT)
    return model


def wrap(model: GPT, strategy: str, ctx: DistContext) -> nn.Module:
    """Move to the rank's device and apply DDP, or FSDP2 with one ``fully_shard`` unit per block."""
    model = model.to(ctx.device)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        for block in shard_units(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)  # the root unit: embeddings (tied head), final norm
        return model
    if strategy == "ddp":
        if ctx.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    raise ValueError(f"train.strategy: unknown strategy {strategy!r}; choose ddp or fsdp")


def build_adamw(
    model: nn.Module, cfg: AdamWConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with decay on 2-D weights only, plus the warmup + cosine schedule of ``cfg.lr_at``."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]))
    # LambdaLR multiplies the base lr; its step counter is the number of optimizer steps taken.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: cfg.lr_at(it) / cfg.lr)
    return opt, sched


def peak_flops_per_rank(cfg: GPTConfig, ctx: DistContext) -> tuple[float, str]:
    """(peak FLOP/s of one rank, how it was chosen) for the MFU estimate."""
    if cfg.train.peak_tflops:
        return cfg.train.peak_tflops * 1e12, f"{cfg.train.peak_tflops:g} TFLOP/s per rank (train.peak_tflops)"
    if ctx.device.type == "cuda":
        name = torch.cuda.get_device_name(ctx.device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{tflops:g} TFLOP/s per rank ({key} bf16 dense peak)"
        return 312e12, f"312 TFLOP/s per rank (unknown GPU {name!r}; A100 bf16 peak assumed)"
    threads = torch.get_num_threads()
    peak = CPU_PEAK_TFLOPS_PER_THREAD * threads
    return peak * 1e12, (
        f"{peak * 1e3:g} GFLOP/s per rank (CPU estimate: {threads} threads x AVX2 FMA float32 at an assumed 2.5 GHz)"
    )


def autocast(ctx: DistContext, bf16: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def no_grad_sync(model: nn.Module, sync: bool) -> AbstractContextManager[Any]:
    """Skip the gradient all-reduce on accumulation passes that are not the last one."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
        return nullcontext()
    if not sync and hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return nullcontext()


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


@torch.no_grad()
def estimate_loss(
    model: nn.Module, windows: TokenWindows, cfg: GPTConfig, ctx: DistContext, micro_batch: int
) -> float:
    """Mean loss over ``eval_iters * batch_size`` fixed windows; ranks split them, sums all-reduced.

    Every rank runs the same number of forward passes (FSDP's forward is a collective).
    """
    model.eval()
    batch, world = cfg.train.batch_size, ctx.world_size
    starts = windows.fixed_starts(cfg.train.eval_iters * batch)
    per_rank = batch // world
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for i in range(cfg.train.eval_iters):
        mine = starts[i * batch + ctx.global_rank * per_rank : i * batch + (ctx.global_rank + 1) * per_rank]
        for j in range(0, per_rank, micro_batch):
            x, y = windows.windows(mine[j : j + micro_batch])
            with autocast(ctx, cfg.train.bf16):
                loss = lm_loss(model, x.to(ctx.device), y.to(ctx.device))
            total += loss.double() * x.shape[0]
    (summed,) = all_reduce_sum([float(total.item())], ctx)
    model.train()
    return summed / len(starts)


def checkpoint_extra(cfg: GPTConfig, vocab_size: int, best_val: float | None) -> dict[str, Any]:
    """What generation needs besides the weights: the architecture and where the tokenizer lives."""
    return {
        "model": dataclasses.asdict(cfg.model),
        "vocab_size": vocab_size,
        "shards": cfg.data.shards,
        "best_val_loss": best_val,
    }


def run_training(cfg: GPTConfig, ctx: DistContext, t_enter: float | None = None) -> dict[str, Any]:
    """Train per ``cfg`` inside an initialised process group; returns the result dict (all ranks)."""
    t_enter = t_enter if t_enter is not None else time.time()
    run_dir = Path(cfg.run.dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat = Heartbeat.from_environment(ctx.global_rank)
    heartbeat.beat(STARTING, force=True)

    manifest = Manifest.read(cfg.data.shards, kind="tokens")
    block = cfg.model.block_size
    train_windows = TokenWindows(cfg.data.shards, cfg.data.train_split, block, manifest)
    val_windows = (
        TokenWindows(cfg.data.shards, cfg.data.val_split, block, manifest)
        if manifest.num_shards(cfg.data.val_split)
        else None
    )
    vocab_size = train_windows.vocab_size

    torch.manual_seed(cfg.train.seed)
    base = build_gpt(cfg.model, vocab_size)
    if cfg.train.init_from:
        base.load_state_dict(init_weights(cfg, vocab_size, ctx))
    model = wrap(base, cfg.train.strategy, ctx)
    # Bytes sent through the gradient all-reduce, counted at the call (training.comm); FSDP's
    # gathers and reduce-scatters are not counted (comm_bytes is then None).
    comm = CommCounter()
    comm_counted = cfg.train.strategy == "ddp"
    if comm_counted and ctx.world_size > 1:
        count_ddp_gradients(model, comm)
    optimizer, scheduler = build_adamw(model, cfg.optim)
    forward_model = model
    if cfg.train.compile:
        forward_model = torch.compile(model)  # type: ignore[assignment]

    it, resumed_from, best_val = 0, None, math.inf
    if cfg.run.resume:
        meta = checkpoint.load_checkpoint(run_dir, model, optimizer, scheduler, ctx)
        if meta is not None:
            it = resumed_from = meta["step"]
            best_val = meta["extra"].get("best_val_loss") or math.inf
            if "comm" in meta["extra"]:
                comm.load_state_dict(meta["extra"]["comm"])
    records = lm_report.reset_records(run_dir, resumed_from or 0) if ctx.is_main else []

    world, batch = ctx.world_size, cfg.train.batch_size
    micro = cfg.train.micro_batch or batch // world
    accum = batch // (world * micro)
    tokens_per_iter = batch * block
    flops_per_iter = base.flops_per_token(block) * tokens_per_iter
    peak, peak_note = peak_flops_per_rank(cfg, ctx)
    if ctx.is_main:
        print(
            f"training gpt ({base.num_parameters():,} parameters; vocab {vocab_size}) with {cfg.train.strategy} "
            f"on {world} x {ctx.device.type}: {cfg.train.max_iters} iterations of {batch} x {block} tokens "
            f"({accum} pass(es) of {micro} per rank); MFU against {peak_note}"
            + (f"; starting from the model in {cfg.train.init_from}" if cfg.train.init_from else ""),
            flush=True,
        )

    def save(at: int) -> None:
        extra = checkpoint_extra(cfg, vocab_size, best_val if best_val < math.inf else None)
        extra["comm"] = comm.state_dict()
        checkpoint.save_checkpoint(
            run_dir, model, optimizer, scheduler, 0, at, ctx, extra, keep=cfg.run.keep_checkpoints
        )

    def evaluate_and_save(at: int) -> None:
        nonlocal best_val
        train_loss = estimate_loss(forward_model, train_windows, cfg, ctx, micro)
        val_loss = estimate_loss(forward_model, val_windows, cfg, ctx, micro) if val_windows else None
        if val_loss is not None:
            best_val = min(best_val, val_loss)
        if cfg.run.checkpoint and at > 0:
            save(at)
        if ctx.is_main:
            rec = {"kind": "eval", "iter": at, "train_loss": train_loss, "val_loss": val_loss}
            if comm_counted:
                rec["comm_bytes"] = comm.bytes_sent
            records.append(rec)
            lm_report.append_record(run_dir, rec)
            tracking.log_metrics(rec, step=rec["iter"])
            if val_loss is not None:
                print(lm_report.eval_line(rec), flush=True)

    if resumed_from is None:
        evaluate_and_save(0)  # the loss at initialisation: about ln(vocab_size)

    model.train()
    first_step_time: float | None = None
    t_train0 = time.time()
    clock = LogWindow()
    loss_window = torch.zeros((), dtype=torch.float64, device=ctx.device)
    while it < cfg.train.max_iters:
        heartbeat.beat(it)
        maybe_fail(cfg.fault, ctx.global_rank, it)
        if first_step_time is None:
            first_step_time = time.time()
        for m in range(accum):
            part = BatchSlice(micro_step=m, rank=ctx.global_rank, world_size=world, micro_batch=micro)
            x, y = train_windows.train_batch(cfg.train.seed, it, batch, part)
            with no_grad_sync(model, sync=m == accum - 1):
                with autocast(ctx, cfg.train.bf16):
                    loss = lm_loss(forward_model, x.to(ctx.device), y.to(ctx.device)) / accum
                loss.backward()
            loss_window += loss.detach().double()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1
        clock.iters += 1

        if it % cfg.train.log_interval == 0 or it == cfg.train.max_iters:
            (loss_sum,) = all_reduce_sum([float(loss_window.item())], ctx)
            n, elapsed = clock.iters, clock.wall_s()
            tokens_per_s = tokens_per_iter * n / elapsed
            rec = {
                "kind": "train",
                "iter": it,
                "train_loss": loss_sum / (world * n),
                "lr": lr,
                "tokens_per_s": tokens_per_s,
                "mfu": flops_per_iter * n / elapsed / (peak * world),
                "elapsed_s": time.time() - t_train0,
                "cpu_s_per_iter": clock.cpu_s() / n,
            }
            if comm_counted:
                rec["comm_bytes"] = comm.bytes_sent
            if ctx.is_main:
                records.append(rec)
                lm_report.append_record(run_dir, rec)
                tracking.log_metrics(rec, step=rec["iter"])
                print(lm_report.train_line(rec, cfg.train.max_iters), flush=True)
            loss_window.zero_()
            clock = LogWindow()
        if it % cfg.train.eval_interval == 0 or it == cfg.train.max_iters:
            with clock.paused():
                evaluate_and_save(it)
        elif cfg.run.checkpoint and cfg.run.checkpoint_every and it % cfg.run.checkpoint_every == 0:
            with clock.paused():
                save(it)
    heartbeat.beat(it, force=True)

    t_end = time.time()
    train_recs = [r for r in records if r.get("kind") == "train"]
    eval_recs = [r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    # The first log interval carries start-up costs (allocation, compilation): leave it out.
    steady = train_recs[1:] or train_recs
    result: dict[str, Any] = {
        "model": "gpt",
        "strategy": cfg.train.strategy,
        "world_size": world,
        "device": ctx.device.type,
        "backend": ctx.backend,
        "parameters": base.num_parameters(),
        "vocab_size": vocab_size,
        "iters": it,
        "resumed_from_iter": resumed_from,
        "train_loss": train_recs[-1]["train_loss"] if train_recs else None,
        "val_loss": eval_recs[-1]["val_loss"] if eval_recs else None,
        "best_val_loss": best_val if best_val < math.inf else None,
        "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady) if steady else None,
        "mfu": sum(r["mfu"] for r in steady) / len(steady) if steady else None,
        "mfu_peak": peak_note,
        "comm_bytes": comm.bytes_sent if comm_counted else None,
        "timings": {
            "rank_start_unix": t_enter,
            "first_step_unix": first_step_time,
            "end_unix": t_end,
            "setup_s": (first_step_time or t_end) - t_enter,
            "total_s": t_end - t_enter,
        },
        "run_dir": str(run_dir),
        "shards": cfg.data.shards,
        "config": cfg.to_dict(),
    }
    if ctx.is_main:
        if cfg.run.plots:
            lm_report.plot_loss(run_dir, records, f"gpt / {cfg.train.strategy} / {world} ranks")
        write_json_atomic(RunDir.at(run_dir).result, result)
        tracking.log_artifacts(run_dir)
    return result


def train(cfg: GPTConfig) -> dict[str, Any]:
    """Rank entry point: join the process group, train, leave. Returns the result dict."""
    t_enter = time.time()
    with (
        distributed(cfg.launch.use_gpu, cfg.launch.collective_timeout_s) as ctx,
        tracking.run(cfg, is_main=ctx.is_main, kind="gpt"),
    ):
        return run_training(cfg, ctx, t_enter)


def main(argv: Sequence[str] | None = None) -> int:
    """``[torchrun ...] python -m training.lm_loop --config X.toml [--set k=v ...]`` (no Spark)."""
    from training.config import config_from_argv

    cfg = config_from_argv("python -m training.lm_loop", main.__doc__, argv)
    if cfg is None:
        return 2
    if not isinstance(cfg, GPTConfig):
        print('error: model.name: this entry point trains model.name = "gpt" configs', file=sys.stderr)
        return 2
    result = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: result[k] for k in ("best_val_loss", "tokens_per_s", "mfu")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
