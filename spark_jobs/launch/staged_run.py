"""A training run's directory is written like every other output: staged, then renamed into place.

``train`` and ``collab`` (image and GPT peers) launch their ranks on a config whose ``run.dir`` is
a hidden sibling of the real one (:func:`spark_jobs.common.output.staged_output`), so ``run.dir``
holds either the earlier run or the finished new one, never half of each. Two things differ from a
plain output, and both live here:

- **Resume.** With ``run.resume = true`` the staging directory starts with the earlier run's
  checkpoints and metrics; the earlier run stays untouched until the new one has finished.
- **Failure.** A run that fails or is stopped keeps its resume point: its intact checkpoints and
  metrics move into ``run.dir`` (unless that holds a different, earlier run), so
  ``--set run.resume=true`` continues from them.

On success the result's ``run_dir`` and ``config.run.dir`` name ``run.dir``, not the staging path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from contracts.atomic import write_json_atomic
from contracts.checkpoints import latest_intact_step
from contracts.rundir import CHECKPOINT, CHECKPOINT_DIR, LAUNCH_DIR, METRICS, RUN_DIRS, RUN_FILES, RunDir
from spark_jobs.common.errors import JobInputError, full_disk_error, storage_error
from spark_jobs.common.output import local_path, staged_output

ConfigT = TypeVar("ConfigT")

# What a failed run leaves for run.resume: the step checkpoints, the newest one's link, the metrics.
RESUME_POINT = (CHECKPOINT_DIR, CHECKPOINT, METRICS)


class LaunchFailed(Exception):
    """A rank failed and the launcher's message is already printed; the job exits 1."""


def launch_in(
    entry: str,
    payload: Any,
    cfg: Any,
    staging: Path,
    *,
    what: str,
    launch_name: str = LAUNCH_DIR,
    restarts: list | None = None,
    prepare_restart: Any = None,
) -> Any:
    """Launch ``entry(payload)`` (``module:function``, imported by the ranks only) as
    ``cfg.launch`` says, with its rank status files in ``staging/launch_name``. With
    ``launch.max_restarts`` each restart is appended to ``restarts`` and prepared by
    ``prepare_restart``. A rank failure prints the launcher's message and raises
    :class:`LaunchFailed`; a full disk or an unwritable output (``what`` names it) becomes one
    storage error instead of the ranks' tracebacks."""
    from spark_jobs.launch import LaunchError, launch

    try:
        return launch(
            entry,
            payload,
            num_processes=cfg.launch.num_processes,
            local_mode=cfg.launch.local_mode,
            use_gpu=cfg.launch.use_gpu,
            timeout_s=cfg.launch.timeout_s,
            launch_dir=staging / launch_name,
            stall_timeout_s=cfg.launch.stall_timeout_s,
            max_restarts=cfg.launch.max_restarts,
            prepare_restart=prepare_restart,
            restarts=restarts,
        )
    except LaunchError as exc:
        storage = storage_error(exc, what, under=str(staging.parent)) or full_disk_error(staging.parent, what)
        if storage is not None:
            raise storage from exc
        print(f"error: {exc}", file=sys.stderr)
        raise LaunchFailed() from None


def launch_run(entry: str, cfg: Any, staging: Path, restarts: list | None = None) -> dict[str, Any]:
    """:func:`launch_in` for a training run: ``cfg`` pointed at ``staging``, each restart resuming
    from the newest checkpoint."""
    from spark_jobs.launch.restarts import resume_from_checkpoint

    return launch_in(
        entry,
        in_staging(cfg, staging),
        cfg,
        staging,
        what=f"run.dir {cfg.run.dir}",
        restarts=restarts,
        prepare_restart=resume_from_checkpoint,
    )


def check_run_dir(run_dir: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """Refuse a ``run.dir`` that would lose something; returns its absolute path.

    A fresh or empty directory is taken. An earlier run there needs ``--overwrite`` (replaced once
    the new run has finished) or ``run.resume = true`` (continued). Files that no run writes are
    never replaced: the directory is refused, naming them.
    """
    target = local_path(run_dir)
    if target.exists() and not target.is_dir():
        raise JobInputError(f"run.dir {target} exists and is not a directory; choose another run.dir")
    if not target.is_dir():
        return target
    known = {*RUN_FILES, *RUN_DIRS}
    foreign = sorted(p.name for p in target.iterdir() if p.name not in known)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise JobInputError(
            f"run.dir {target} holds files that are not a run's ({shown}); choose another run.dir "
            "(a finished run replaces the whole directory)"
        )
    earlier = RunDir.at(target).earlier_run()
    if earlier and not (overwrite or resume):
        raise JobInputError(
            f"run.dir {target} holds an earlier run ({', '.join(earlier)}); pass --overwrite, "
            "--set run.resume=true, or another --set run.dir=..."
        )
    return target


def in_staging(cfg: ConfigT, staging: Path) -> ConfigT:
    """``cfg`` with ``run.dir`` pointing at the staging directory: what the ranks run."""
    run = dataclasses.replace(cfg.run, dir=str(staging))  # type: ignore[attr-defined]
    return dataclasses.replace(cfg, run=run)  # type: ignore[type-var]


@contextmanager
def staged_run_dir(
    run_dir: str | os.PathLike,
    *,
    overwrite: bool,
    resume: bool,
    inputs: Iterable[str | os.PathLike] = (),
) -> Iterator[Path]:
    """Yield the staging directory the ranks write into; it becomes ``run_dir`` when the block ends.

    Holds ``run_dir``'s lock throughout. When the block raises (a failed launch, Ctrl-C, SIGTERM),
    the resume point is kept (see the module docstring) and the staging directory is removed.
    """
    target = check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    with staged_output(target, overwrite=True, flag="run.dir", inputs=inputs) as staging:
        staging.mkdir(parents=True)
        if resume:
            _seed_resume_point(target, staging)
        try:
            yield staging
        except BaseException:
            step = keep_resume_point(staging, target, resuming=resume)
            if step is not None:
                print(
                    f"checkpoints up to step {step} kept in {target}; continue with --set run.resume=true",
                    file=sys.stderr,
                )
            raise
        name_final_location(staging, target)


def _seed_resume_point(run_dir: Path, staging: Path) -> None:
    """Copy the earlier run's resume point into the staging directory. Checkpoints are hard-linked
    (they are only ever replaced, never changed in place); metrics.jsonl is copied (it grows)."""
    source, into = RunDir.at(run_dir), RunDir.at(staging)
    if source.checkpoints.is_dir():
        shutil.copytree(source.checkpoints, into.checkpoints, copy_function=_link_or_copy)
    if source.checkpoint.is_file():
        _link_or_copy(source.checkpoint, into.checkpoint)
    if source.metrics.is_file():
        shutil.copy2(source.metrics, into.metrics)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)


def keep_resume_point(
    staging: str | os.PathLike, run_dir: str | os.PathLike, *, resuming: bool
) -> int | None:
    """After a failed or interrupted run: move the intact checkpoints (and the metrics up to them)
    that the ranks wrote into the staging directory over to ``run_dir``, so that
    ``run.resume = true`` continues from them.

    Only when ``run_dir`` holds nothing of another run: it is absent, or it is this run's own
    (``resuming``). An earlier, finished run there (replaced under ``--overwrite``) is left as it
    was. Returns the step the checkpoints reach, or None when nothing was kept.
    """
    step = latest_intact_step(staging)
    target = Path(run_dir)
    if step is None or (target.exists() and not resuming):
        return None
    target.mkdir(parents=True, exist_ok=True)
    # The staging directory is a sibling of run_dir and is removed next: move, do not copy.
    for name in RESUME_POINT:
        source, kept = Path(staging) / name, target / name
        if not source.exists():
            continue
        if kept.is_dir():
            shutil.rmtree(kept)
        source.replace(kept)
    return step


def name_final_location(staging: Path, run_dir: Path) -> None:
    """The run's result.json names ``run_dir`` (the ranks only knew the staging path)."""
    result = RunDir.at(staging).result
    if not result.is_file():
        return
    doc: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    if "run_dir" in doc:
        doc["run_dir"] = str(run_dir)
    run_section = doc.get("config", {}).get("run")
    if isinstance(run_section, dict) and "dir" in run_section:
        run_section["dir"] = str(run_dir)
    write_json_atomic(result, doc)
