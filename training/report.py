"""What a run leaves behind, written by the main rank only.

- ``metrics.jsonl``: one JSON object per epoch (``epoch``, ``step``, ``train_loss``,
  ``train_accuracy``, ``val_accuracy``, ``samples_per_s``, ``epoch_time_s``, ``lr``, ``elapsed_s``).
- ``result.json``: final metrics, config, world size, device and timings.
- ``curves.png``: loss and accuracy per epoch (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contracts.atomic import save_figure_atomic, write_text_atomic
from contracts.rundir import CURVES, METRICS, RESULT


def progress_line(rec: dict[str, Any], epochs: int) -> str:
    """One readable line per epoch."""
    val = rec.get("val_accuracy")
    val_s = f"{val:.4f}" if val is not None else "  -   "
    return (
        f"epoch {rec['epoch']:>3}/{epochs}  loss {rec['train_loss']:.4f}  acc {rec['train_accuracy']:.4f}  "
        f"val_acc {val_s}  {rec['samples_per_s']:>9.0f} samples/s  {rec['epoch_time_s']:.2f}s  lr {rec['lr']:.3g}"
    )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reset_metrics(run_dir: str | Path, keep_through_epoch: int) -> list[dict[str, Any]]:
    """Keep the records of epochs <= ``keep_through_epoch`` (a resume point); drop later ones."""
    kept = [r for r in read_metrics(run_dir) if r["epoch"] <= keep_through_epoch]
    path = Path(run_dir) / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_metrics(run_dir: str | Path, rec: dict[str, Any]) -> None:
    path = Path(run_dir) / METRICS
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


def write_result(run_dir: str | Path, result: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULT
    write_text_atomic(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def plot_curves(run_dir: str | Path, records: Sequence[dict[str, Any]], title: str = "") -> Path | None:
    """Loss and accuracy per epoch as one PNG; None when there is nothing to plot."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_accuracy"] for r in records], marker="o", label="train")
    if any(r.get("val_accuracy") is not None for r in records):
        ax_acc.plot(epochs, [r.get("val_accuracy") for r in records], marker="s", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = save_figure_atomic(fig, Path(run_dir) / CURVES)
    plt.close(fig)
    return path
