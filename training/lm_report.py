"""What a GPT run leaves behind (main rank only): metrics.jsonl records, log lines, the loss curve.

``metrics.jsonl`` holds two kinds of records, both keyed by ``iter`` (optimizer steps done):

- ``{"kind": "train", "iter", "train_loss", "lr", "tokens_per_s", "mfu", "elapsed_s",
  "cpu_s_per_iter"}`` every ``train.log_interval`` iterations; ``train_loss`` is the mean over the
  interval and the ranks, ``cpu_s_per_iter`` the main rank's CPU seconds per iteration;
- ``{"kind": "eval", "iter", "train_loss", "val_loss"}`` every ``train.eval_interval`` iterations,
  both measured on fixed windows.

Both also carry ``comm_bytes`` (bytes this rank has sent through collectives so far, counted by
:mod:`training.comm`) when the run counts them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contracts.atomic import save_figure_atomic, write_text_atomic
from contracts.rundir import RunDir


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunDir.at(run_dir).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reset_records(run_dir: str | Path, keep_through_iter: int) -> list[dict[str, Any]]:
    """Keep the records up to a resume point (iteration ``keep_through_iter``); drop later ones."""
    kept = [r for r in read_records(run_dir) if r.get("iter", 0) <= keep_through_iter]
    path = RunDir.at(run_dir).metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_record(run_dir: str | Path, rec: dict[str, Any]) -> None:
    with RunDir.at(run_dir).metrics.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def train_line(rec: dict[str, Any], max_iters: int) -> str:
    line = (
        f"iter {rec['iter']:>6}/{max_iters}  loss {rec['train_loss']:.4f}  lr {rec['lr']:.3g}  "
        f"{rec['tokens_per_s']:>9.0f} tokens/s  MFU {100 * rec['mfu']:.2f}%"
    )
    if rec.get("comm_bytes") is not None:  # bytes this rank sent through collectives (training.comm)
        line += f"  sent {rec['comm_bytes'] / 1e6:.1f} MB"
    return line


def eval_line(rec: dict[str, Any]) -> str:
    return f"iter {rec['iter']:>6}  eval: train loss {rec['train_loss']:.4f}  val loss {rec['val_loss']:.4f}"


def plot_loss(run_dir: str | Path, records: Sequence[dict[str, Any]], title: str = "") -> Path | None:
    """Train loss per log interval and the fixed-window train/val losses per evaluation, one PNG."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(
            [r["iter"] for r in train], [r["train_loss"] for r in train], alpha=0.5, label="train (running)"
        )
    if evals:
        its = [r["iter"] for r in evals]
        ax.plot(its, [r["train_loss"] for r in evals], marker="o", label="train (fixed windows)")
        ax.plot(its, [r["val_loss"] for r in evals], marker="s", label="val (fixed windows)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = save_figure_atomic(fig, RunDir.at(run_dir).curves)
    plt.close(fig)
    return path
