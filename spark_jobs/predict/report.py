"""The report of a ``spark-collab predict`` run: accuracy, per-class precision and recall, confusion matrix.

Computed on the driver from the ``(label, prediction) -> count`` table (a few hundred numbers at
most), so nothing here touches rows. No pyspark here; matplotlib with the Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contracts.atomic import save_figure_atomic

REPORT = "report.json"
CONFUSION_PLOT = "confusion.png"
PREDICTIONS_DIR = "predictions"


def confusion_matrix(counts: Mapping[tuple[int, int], int], num_classes: int) -> list[list[int]]:
    """``m[label][prediction]`` from ``{(label, prediction): count}``; out-of-range labels are skipped."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for (label, prediction), n in counts.items():
        if 0 <= label < num_classes and 0 <= prediction < num_classes:
            matrix[label][prediction] += n
    return matrix


def classification_metrics(matrix: list[list[int]]) -> dict[str, Any]:
    """Accuracy, and per class precision (of the rows predicted as it) and recall (of its rows).

    A class that is never predicted (or never present) has precision (or recall) None, not 0:
    there is nothing to measure.
    """
    classes = len(matrix)
    total = sum(sum(row) for row in matrix)
    correct = sum(matrix[k][k] for k in range(classes))
    predicted = [sum(matrix[label][k] for label in range(classes)) for k in range(classes)]
    actual = [sum(matrix[k]) for k in range(classes)]
    return {
        "rows": total,
        "accuracy": correct / total if total else None,
        "precision": [matrix[k][k] / predicted[k] if predicted[k] else None for k in range(classes)],
        "recall": [matrix[k][k] / actual[k] if actual[k] else None for k in range(classes)],
        "support": actual,
    }


def plot_confusion(matrix: list[list[int]], path: Path, title: str) -> Path:
    """The confusion matrix as a PNG: rows are true labels, columns predictions, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * classes, 0.8 + 0.6 * classes))
    image = ax.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix), default=0)
    for label in range(classes):
        for prediction in range(classes):
            n = matrix[label][prediction]
            colour = "white" if peak and n > peak / 2 else "black"
            ax.text(prediction, label, str(n), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path
