"""Optional experiment tracking with MLflow: ``run.tracking = "mlflow"`` switches it on.

Runs inside torch ranks (never imports pyspark) and on the driver for runs whose files the driver
writes (collab). Only the process that writes the run directory logs: the main rank of a training
loop (``is_main``), or the driver. Every function is a no-op while no run is active, so a loop calls
them unconditionally::

    with tracking.run(cfg, is_main=ctx.is_main, kind="train"):   # params; FAILED on an exception
        ...
        tracking.log_metrics(rec, step=epoch)                     # per epoch / round / evaluation
        ...
        tracking.log_artifacts(run_dir)                           # result.json, metrics.jsonl, *.png
        tracking.log_model(module, example)                       # a pyfunc-loadable PyTorch model

(``start_run(cfg, ...)`` / ``end_run(status)`` are the same without the ``with``.)

Where it logs: ``MLFLOW_TRACKING_URI`` when set (a server, a database, a directory); otherwise a
file store in ``mlruns/`` under the working directory. MLflow 3 refuses file stores unless
``MLFLOW_ALLOW_FILE_STORE`` is true; that default is set here only for the ``mlruns/`` default,
which ``mlflow ui --backend-store-uri ./mlruns`` reads. The experiment is ``MLFLOW_EXPERIMENT_NAME``
or ``spark-collab``; the run is named after the run directory and tagged with its kind and path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.atomic import final_path

if TYPE_CHECKING:
    from training.config import ModelConfig
    from training.data import ShardData

DEFAULT_STORE = "mlruns"
DEFAULT_EXPERIMENT = "spark-collab"
# What a run directory holds that is worth keeping beside the run (checkpoints are not: the model
# is logged once, in MLflow's own format).
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".png")
MODEL_ARTIFACT = "model"

_active: Any = None  # the mlflow module while a run is active in this process


def enabled(cfg: Any) -> bool:
    """Whether ``cfg`` asks for tracking (``run.tracking``); raises ValueError for an unknown tracker."""
    tracker = getattr(cfg.run, "tracking", "none")
    if tracker not in ("none", "mlflow"):
        raise ValueError(f"run.tracking: unknown tracker {tracker!r}; choose none or mlflow")
    return tracker == "mlflow"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the file store ``mlruns/`` in the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path.cwd() / DEFAULT_STORE).absolute().as_uri()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(rec: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record (nested keys dotted, lists indexed); the rest is dropped."""
    out: dict[str, float] = {}
    for key, value in flatten(rec).items():
        values = enumerate(value) if isinstance(value, list | tuple) else [(None, value)]
        for index, item in values:
            if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
                continue
            out[key if index is None else f"{key}.{index}"] = float(item)
    return out


def active() -> bool:
    """Whether this process has a tracking run open."""
    return _active is not None


def start_run(cfg: Any, *, is_main: bool = True, kind: str = "train") -> bool:
    """Open a run and log ``cfg`` as params when ``run.tracking = "mlflow"`` and ``is_main``.

    ``cfg`` is any config with a ``run`` section and ``to_dict()``. Returns whether a run is open.
    """
    global _active
    if not is_main or not enabled(cfg):
        return False
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
    run_dir = final_path(cfg.run.dir)  # the ranks may write into a staged run.dir
    mlflow.start_run(
        run_name=run_dir.name, tags={"spark_collab.kind": kind, "spark_collab.run_dir": str(run_dir)}
    )
    _active = mlflow
    params = {key: str(value) for key, value in flatten(cfg.to_dict()).items()}
    params["run.dir"] = str(run_dir)
    mlflow.log_params(params)
    return True


def log_metrics(rec: Mapping[str, Any], step: int) -> None:
    """Log the numbers in one metrics record at ``step`` (an epoch, a round, an iteration)."""
    if _active is not None:
        _active.log_metrics(numeric_metrics(rec), step=step)


def log_artifacts(run_dir: str | os.PathLike[str]) -> list[str]:
    """Log the result, metrics and plots in ``run_dir`` (top level; not checkpoints); returns their names."""
    if _active is None:
        return []
    names = []
    for path in sorted(Path(run_dir).iterdir()):
        if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and not path.name.startswith("."):
            _active.log_artifact(str(path))
            names.append(path.name)
    return names


def log_model(module: Any, input_example: Any) -> None:
    """Log a PyTorch module with a signature inferred from ``input_example`` (a float32 NumPy batch),
    so that ``mlflow.pyfunc.load_model`` and ``mlflow.pyfunc.spark_udf`` load it."""
    if _active is None:
        return
    import mlflow.pytorch

    # The flavour's default requirements: inferring them instead loads the model in a subprocess
    # (tens of seconds on a busy machine).
    info = mlflow.pytorch.log_model(
        module.cpu().eval(),
        name=MODEL_ARTIFACT,
        input_example=input_example,
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
    )
    _active.set_tag("spark_collab.model_uri", info.model_uri)


def log_checkpoint_model(model_cfg: ModelConfig, run_dir: str | os.PathLike[str], data: ShardData) -> None:
    """Log the classifier in ``run_dir``'s checkpoint as a plain module (the checkpoint holds the full,
    unsharded state whatever the strategy was), with a few rows of ``data`` as the input example."""
    if _active is None:
        return
    from contracts.rundir import RunDir
    from training.checkpoint import load_model_state
    from training.models import build_model

    module = build_model(model_cfg.name, data.feature_shape, data.num_classes, model_cfg)
    module.load_state_dict(load_model_state(RunDir.at(run_dir).checkpoint))
    log_model(module, data.features[:4].numpy())


def end_run(status: str = "FINISHED") -> None:
    """Close the open run (``FINISHED``, ``FAILED`` or ``KILLED``); a no-op without one."""
    global _active
    if _active is not None:
        mlflow, _active = _active, None
        mlflow.end_run(status=status)


@contextmanager
def run(cfg: Any, *, is_main: bool = True, kind: str = "train") -> Iterator[bool]:
    """``start_run`` ... ``end_run``; the run ends ``FAILED`` when the body raises."""
    opened = start_run(cfg, is_main=is_main, kind=kind)
    try:
        yield opened
    except BaseException:
        if opened:
            end_run("FAILED")
        raise
    if opened:
        end_run()


def log_finished_run(
    cfg: Any, run_dir: str | os.PathLike[str], history: list[Mapping[str, Any]], step_key: str, kind: str
) -> bool:
    """Log a run whose files are already written (params, every history record at its ``step_key``,
    the artifacts): for runs written by the driver rather than a rank. Returns whether it logged."""
    with run(cfg, kind=kind) as opened:
        for rec in history:
            log_metrics(rec, step=int(rec[step_key]))
        log_artifacts(run_dir)
    return opened
