"""What every collaborative GPT loop shares: run directory, windows, records, logging, resume checks, result.

Bytes sent through collectives are counted at the call (:mod:`training.comm`) and reported on
every log line, in every record of metrics.jsonl and in result.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contracts.atomic import write_json_atomic, write_text_atomic
from contracts.heartbeat import STARTING, Heartbeat
from contracts.manifest import Manifest
from contracts.rundir import RunDir
from training import checkpoint, lm_collab_report, lm_report
from training.comm import CommCounter
from training.dist import DistContext, all_reduce_sum
from training.gpt import GPT
from training.lm_collab_replica import (
    all_replicas_batch,
    all_replicas_config,
    param_bytes,
    peer_seed,
    replica_windows,
)
from training.lm_config import GPTConfig
from training.lm_data import TokenWindows
from training.lm_loop import peak_flops_per_rank


class CollabRun:
    """One rank's bookkeeping of a collaborative run: its windows, the records, the log window, the result."""

    def __init__(self, cfg: GPTConfig, ctx: DistContext, t_enter: float) -> None:
        assert cfg.collab is not None
        self.cfg, self.ctx, self.c, self.t_enter = cfg, ctx, cfg.collab, t_enter
        self.run_dir = Path(cfg.run.dir)
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        # This rank's dropout stream starts from its replica's init seed, so that a run is reproducible
        # whatever ran before it in the process (a resumed run then takes the checkpoint's stream).
        torch.manual_seed(peer_seed(cfg, ctx.global_rank))
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
        self.eval_cfg = all_replicas_config(cfg, ctx.world_size)
        self.tokens_per_iter = all_replicas_batch(cfg, ctx.world_size) * block
        self.vocab_size = self.train_windows.vocab_size
        self.comm = CommCounter()
        self.records: list[dict[str, Any]] = []
        self.peak, self.peak_note = peak_flops_per_rank(cfg, ctx)
        self.t_log, self.iters_since_log, self.pause = time.perf_counter(), 0, 0.0
        self.loss_window, self.kl_window = 0.0, 0.0
        self.first_step_time: float | None = None
        self.t_train0 = time.time()

    def flops_per_iter(self, model: GPT) -> float:
        """Training FLOPs of one iteration over all replicas (MFU divides by the peak of all ranks)."""
        return model.flops_per_token(self.cfg.model.block_size) * self.tokens_per_iter

    def record(self, rec: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.records.append(rec)
            lm_report.append_record(self.run_dir, rec)

    def reset_records(self, resumed_from: int) -> None:
        """Main rank: keep metrics.jsonl up to the resume point (everything after it is redone).

        A fusion record shares the last iteration with the final checkpoint but comes after it, so
        a run resumed from that checkpoint drops it and fuses again.
        """
        if not self.ctx.is_main:
            return
        kept = lm_report.reset_records(self.run_dir, resumed_from)
        self.records = [r for r in kept if "fused" not in r]
        if len(self.records) < len(kept):
            lines = "".join(json.dumps(r) + "\n" for r in self.records)
            write_text_atomic(RunDir.at(self.run_dir).metrics, lines)

    def note_step(self, ce: float, kl: float) -> None:
        self.loss_window += ce
        self.kl_window += kl
        self.iters_since_log += 1

    def log_window_state(self) -> dict[str, Any]:
        """The sums of the current log interval, so that a resumed run logs the interval it was in."""
        return {"loss": self.loss_window, "kl": self.kl_window, "iters": self.iters_since_log}

    def load_log_window_state(self, state: dict[str, Any]) -> None:
        self.loss_window, self.kl_window = state["loss"], state["kl"]
        self.iters_since_log = state["iters"]

    def load_checkpoint(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> dict[str, Any] | None:
        """Collective: :func:`training.checkpoint.load_checkpoint` from run.dir, checked to be this run's.

        ValueError (on every rank) for a checkpoint of another mode or number of replicas; None when
        run.dir holds no checkpoint.
        """
        try:
            meta = checkpoint.load_checkpoint(self.run_dir, model, optimizer, scheduler, self.ctx)
        except checkpoint.NoIntactCheckpoint:
            raise
        except (AssertionError, KeyError, RuntimeError, ValueError) as exc:
            # The state did not fit (every rank gets the same state, so every rank fails alike):
            # most likely a checkpoint of a mode whose optimizer or model differs from this one.
            raise ValueError(
                f"run.resume: the checkpoint in {self.run_dir} does not fit this run "
                f"(collab.mode = {self.c.mode!r}, this model and {self.ctx.world_size} replicas): {exc}"
            ) from exc
        if meta is not None:
            self.check_resumable(meta["extra"])
        return meta

    def check_resumable(self, extra: dict[str, Any]) -> None:
        """ValueError unless the checkpoint's ``extra`` was written by this mode with this many replicas."""
        mode, world = extra.get("mode", self.c.mode), extra.get("replicas", self.ctx.world_size)
        if mode != self.c.mode:
            raise ValueError(
                f"run.resume: the checkpoint in {self.run_dir} is of collab.mode = {mode!r}, not {self.c.mode!r}"
            )
        if world != self.ctx.world_size:
            raise ValueError(
                f"run.resume: the checkpoint in {self.run_dir} holds {world} replicas; "
                f"set launch.num_processes = {world}"
            )

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
            "tokens_per_s": self.tokens_per_iter * n / elapsed,
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
        """The run's result (every rank); the main rank also draws the curves and writes result.json."""
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
