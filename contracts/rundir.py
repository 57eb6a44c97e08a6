"""The layout of a training run directory: every file name is defined here and nowhere else.

A run directory (``run.dir``) holds what one ``train`` or ``collab`` run leaves behind::

    result.json       final metrics, config, world size, timings (written last: its presence means done)
    metrics.jsonl     one JSON object per epoch, round or evaluation
    checkpoint.pt     the latest checkpoint (main rank, atomic; a hard link to the newest in checkpoints/)
    checkpoints/      the last ``run.keep_checkpoints`` checkpoints, ``step-<n>.pt`` each with a
                      ``step-<n>.json`` record (step, epoch, size, SHA-256) written after it
    curves.png        loss / accuracy curves (train, GPT)
    accuracy.png      per-peer and fused accuracy (collab)
    agreement.png     peer disagreement (collab)
    peers.pt          every peer's final parameters and init fingerprint (collab; what predict loads)
    launch/           per-rank status files of the last launch

While a job writes a run directory it holds a lock beside it, ``.NAME.lock`` in the parent
directory (``spark_jobs/common/locks.py``): outside, so that replacing the whole directory and two jobs
aimed at the same ``run.dir`` share one lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULT = "result.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CURVES = "curves.png"
ACCURACY_PLOT = "accuracy.png"
AGREEMENT_PLOT = "agreement.png"
PEER_MODELS = "peers.pt"
LAUNCH_DIR = "launch"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_SUFFIX = ".pt"
CHECKPOINT_RECORD_SUFFIX = ".json"

# What an earlier run may have left; --overwrite replaces exactly these, never anything else.
RUN_FILES = (RESULT, METRICS, CHECKPOINT, CURVES, ACCURACY_PLOT, AGREEMENT_PLOT, PEER_MODELS)
RUN_DIRS = (LAUNCH_DIR, CHECKPOINT_DIR)


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike) -> RunDir:
        return cls(Path(path))

    @property
    def result(self) -> Path:
        return self.root / RESULT

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    def step_checkpoint(self, step: int) -> Path:
        """The checkpoint written after global step ``step`` (zero-padded: names sort by step)."""
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:09d}{CHECKPOINT_SUFFIX}"

    @staticmethod
    def checkpoint_record(checkpoint: Path) -> Path:
        """The record beside a step checkpoint; it is written last, so its absence means incomplete."""
        return checkpoint.with_suffix(CHECKPOINT_RECORD_SUFFIX)

    def step_checkpoints(self) -> list[Path]:
        """The step checkpoint files present, newest (highest step) first."""
        if not self.checkpoints.is_dir():
            return []
        found = self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}")
        return sorted(found, key=lambda p: p.name, reverse=True)

    @property
    def launch(self) -> Path:
        return self.root / LAUNCH_DIR

    def earlier_run(self) -> list[str]:
        """The names of what an earlier run left here (empty for a fresh directory)."""
        return [name for name in (*RUN_FILES, *RUN_DIRS) if (self.root / name).exists()]
