"""Log lines and plots of collaborative GPT runs (main rank and the comparison bench).

A run's curves are drawn twice: val loss against inner steps, and val loss against the bytes this
rank sent through collectives (:mod:`training.comm`), the axis on which the modes differ most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contracts.atomic import save_figure_atomic
from contracts.rundir import RunDir
from training import lm_report


def megabytes(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def train_line(rec: Mapping[str, Any], max_iters: int) -> str:
    """The GPT train line (loss, lr, tokens/s, MFU, bytes sent), plus the KL term of codistillation."""
    line = lm_report.train_line(dict(rec), max_iters)
    if "kl" in rec:
        line += f"  kl {rec['kl']:.4f}"
    return line


def eval_line(rec: Mapping[str, Any]) -> str:
    return (
        f"iter {rec['iter']:>6}  eval: train loss {rec['train_loss']:.4f}  val loss {rec['val_loss']:.4f}  "
        f"after {rec['rounds']} outer steps  sent {megabytes(rec['comm_bytes'])}"
    )


def peers_eval_line(rec: Mapping[str, Any]) -> str:
    peers = " ".join(f"{v:.4f}" for v in rec["peer_val_losses"])
    return (
        f"iter {rec['iter']:>6}  eval: val loss peers [{peers}]  ensemble {rec['ensemble_val_loss']:.4f}  "
        f"peer KL {rec['peer_kl']:.4f}  sent {megabytes(rec['comm_bytes'])}"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _evals(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None and "fused" not in r
    ]


def plot_run(run_dir: str | Path, records: Sequence[Mapping[str, Any]], title: str = "") -> Path | None:
    """``curves.png``: val loss against inner steps and against bytes sent."""
    evals = _evals(records)
    if not evals:
        return None
    plt = _pyplot()
    fig, (by_step, by_bytes) = plt.subplots(1, 2, figsize=(11, 4.5))
    its = [r["iter"] for r in evals]
    by_step.plot(its, [r["val_loss"] for r in evals], marker="o", label="val loss")
    if "mean_peer_val_loss" in evals[0]:
        by_step.plot(its, [r["mean_peer_val_loss"] for r in evals], marker=".", label="mean peer val loss")
    by_bytes.plot([r["comm_bytes"] / 1e6 for r in evals], [r["val_loss"] for r in evals], marker="o")
    by_step.set_xlabel("inner step")
    by_bytes.set_xlabel("MB sent per rank")
    for ax in (by_step, by_bytes):
        ax.set_ylabel("val cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
    by_step.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = save_figure_atomic(fig, RunDir.at(run_dir).curves)
    plt.close(fig)
    return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def plot_compare(path: Path, arms: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], title: str) -> Path:
    """Val loss per arm against steps and against bytes (log scale), one line per seed, one colour per arm."""
    plt = _pyplot()
    fig, (by_step, by_bytes) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, seeds) in enumerate(arms.items()):
        colour = colours[i % len(colours)]
        for s, records in enumerate(seeds):
            evals = _evals(records)
            label = arm if s == 0 else None
            by_step.plot(
                [r["iter"] for r in evals], [r["val_loss"] for r in evals], color=colour, label=label
            )
            sent = [(r["comm_bytes"], r["val_loss"]) for r in evals if r.get("comm_bytes")]
            if sent:
                by_bytes.plot(
                    [b / 1e6 for b, _ in sent], [v for _, v in sent], color=colour, marker=".", label=label
                )
    by_step.set_xlabel("inner step (same tokens per step in every arm)")
    by_bytes.set_xlabel("MB sent per rank (log)")
    by_bytes.set_xscale("log")
    for ax in (by_step, by_bytes):
        ax.set_ylabel("val cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = save_figure_atomic(fig, path)
    plt.close(fig)
    return out
