"""Checks made before ranks are launched: configuration mistakes that would otherwise surface late.

A data set whose test split has another shape than its training split, a resumed run whose model
or data changed, and a key the job accepts but never reads are all mistakes in the config. Found
inside the ranks, they cost the whole training run and a screen of tracebacks; found here they
are one ``error:`` line (exit code 2) and nothing is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spark_jobs.common.errors import JobInputError
from spark_jobs.common.wording import plural

if TYPE_CHECKING:
    from contracts.manifest import Manifest
    from training.config import TrainConfig
    from training.lm_config import GPTConfig


def data_shape(manifest: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """``(feature_shape, num_classes)`` recorded in a shards manifest; None when it records neither."""
    shape, classes = manifest.get("feature_shape"), manifest.get("num_classes")
    if shape is None or classes is None:
        return None
    return tuple(int(d) for d in shape), int(classes)


def check_test_matches_train(cfg: TrainConfig, train: Mapping[str, Any], test: Mapping[str, Any]) -> None:
    """``data.test`` must have the features and classes of ``data.shards``: the model is built for the
    latter and evaluated on the former."""
    ours, theirs = data_shape(train), data_shape(test)
    if ours is None or theirs is None:
        return
    (shape, classes), (test_shape, test_classes) = ours, theirs
    # Ranks read features flat, so 28x28 and 784 are the same input; the number of values is what counts.
    if math.prod(shape) != math.prod(test_shape):
        raise JobInputError(
            f"data.test: {cfg.data.test} holds features of shape {_shape(test_shape)} ({math.prod(test_shape)} values), "
            f"data.shards {cfg.data.shards} holds {_shape(shape)} ({math.prod(shape)} values); "
            "shard the test data from a source with the same features, or clear data.test"
        )
    if classes != test_classes:
        raise JobInputError(
            f"data.test: {cfg.data.test} has {plural(test_classes, 'class', 'classes')}, data.shards "
            f"{cfg.data.shards} has {classes}; re-shard one of them with --num-classes {max(classes, test_classes)}"
        )


def check_model_fits(
    cfg: TrainConfig,
    manifest: Mapping[str, Any],
    models: Sequence[str] = (),
    *,
    check_checkpoint: bool = True,
) -> None:
    """The model (and any ``models`` named besides it) can be built for the data's shape; and with
    ``run.resume`` and ``check_checkpoint``, the checkpoint in ``run.dir`` holds that same model.
    (A collab checkpoint holds every peer; its ranks check it against the run.) Imports torch."""
    from training.compat import checkpoint_mismatch, model_state_shapes

    recorded = data_shape(manifest)
    if recorded is None:
        return
    shape, classes = recorded
    for name in dict.fromkeys([cfg.model.name, *models]):
        try:
            model_state_shapes(dataclasses.replace(cfg.model, name=name), shape, classes)
        except ValueError as exc:
            raise JobInputError(f"model.name={name!r} does not fit {cfg.data.shards}: {exc}") from None
    if cfg.run.resume and check_checkpoint:
        why = checkpoint_mismatch(cfg.run.dir, cfg.model, shape, classes)
        if why is not None:
            raise JobInputError(
                f"run.resume=true: {why}; resume with the model and data it was written with, "
                "or start a new --set run.dir=..."
            )


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def check_warm_start(cfg: GPTConfig, manifest: Manifest) -> None:
    """With ``train.init_from``, that run holds a GPT of this run's model keys and vocabulary (imports torch)."""
    if not cfg.train.init_from:
        return
    from training.lm_init import check_init_from

    try:
        check_init_from(cfg, int(manifest.get("vocab_size")))
    except ValueError as exc:
        raise JobInputError(str(exc)) from None
