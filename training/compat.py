"""Whether a config fits its data and its checkpoint, answered before any rank starts.

The driver asks these questions so that a mistake in the config is one line before launching,
instead of a shape error inside every rank after hours of training. The answers come from the
same model builders the ranks use, so they cannot disagree with what the ranks would build.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from contracts.rundir import RunDir
from training.config import ModelConfig
from training.models import build_model


def model_state_shapes(
    model: ModelConfig, feature_shape: Sequence[int], num_classes: int
) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of ``model`` built for the data (ValueError when it cannot be)."""
    # The meta device allocates nothing: only the shapes are wanted.
    with torch.device("meta"):
        built = build_model(model.name, feature_shape, num_classes, model)
    return {key: tuple(value.shape) for key, value in built.state_dict().items()}


def checkpoint_mismatch(
    run_dir: str | Path, model: ModelConfig, feature_shape: Sequence[int], num_classes: int
) -> str | None:
    """Why the checkpoint in ``run_dir`` cannot be resumed with this model and data; None when it can
    (or when there is no checkpoint, which resume treats as a fresh start)."""
    path = RunDir.at(run_dir).checkpoint
    if not path.is_file():
        return None
    try:
        # mmap: only the tensors' headers are read, not the weights.
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["model"]
    except Exception as exc:  # a truncated or foreign file: say so instead of failing in the ranks
        return f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})"
    expected = model_state_shapes(model, feature_shape, num_classes)
    built_for = (
        f"model.name={model.name!r} on features of shape {tuple(feature_shape)} with {num_classes} classes"
    )
    missing = [key for key in expected if key not in saved]
    extra = [key for key in saved if key not in expected]
    if missing or extra:
        names = ", ".join((missing or extra)[:3])
        side = "lacks" if missing else "has parameters the model does not:"
        return f"{path} {side} {names}; it was written by another model than {built_for}"
    for key, shape in expected.items():
        saved_shape = tuple(saved[key].shape)
        if saved_shape != shape:
            return (
                f"{path} holds {key} of shape {list(saved_shape)}, but {built_for} needs {list(shape)}; "
                "the model or the data shape changed since the checkpoint was written"
            )
    return None
