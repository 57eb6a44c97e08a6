"""Driver side of automatic restarts for the training jobs: resume points and the record of restarts.

The launcher decides *when* to relaunch (``launch.max_restarts``); this module says *how* a
training run continues, which is the job's business: the next attempt resumes from the newest
intact checkpoint in ``run.dir`` (``run.resume = true``), and every restart is added to the run's
``result.json`` under ``"restarts"`` (which rank, why, at which step it stopped, from which step
the run went on). No training logic here: the checkpoint records are read with the standard
library (:mod:`contracts.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.atomic import write_json_atomic
from contracts.checkpoints import latest_intact_step
from contracts.rundir import RunDir

if TYPE_CHECKING:
    from spark_jobs.launch import RestartRecord
    from training.config import TrainConfig


def resume_from_checkpoint(cfg: TrainConfig) -> tuple[TrainConfig, int | None]:
    """The config of the next attempt (``run.resume`` on) and the step it resumes from (None: 0)."""
    resumed = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True))
    return resumed, latest_intact_step(cfg.run.dir)


def restart_entries(records: Sequence[RestartRecord]) -> list[dict[str, Any]]:
    """The restarts as JSON-ready dicts, in the order they happened."""
    return [dataclasses.asdict(r) for r in records]


def record_restarts(run_dir: str | Path, records: Sequence[RestartRecord]) -> None:
    """Add ``"restarts"`` to the run's result.json (written by rank 0 of the final attempt)."""
    result_path = RunDir.at(run_dir).result
    if not result_path.is_file():
        return  # the run wrote no result (e.g. an evaluation-only run): nothing to annotate
    doc = json.loads(result_path.read_text(encoding="utf-8"))
    doc["restarts"] = restart_entries(records)
    write_json_atomic(result_path, doc)
