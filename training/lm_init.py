"""Warm start: a GPT run that begins from the weights of an earlier GPT run instead of a random init.

``train.init_from`` names a run directory (``spark-collab train`` or ``collab``); the model its
``checkpoint.pt`` holds (for DiLoCo/FedAvg, the outer parameters) becomes the starting point of
the new run, of every rank's replica or peer in collaborative training. Only the weights carry
over: the optimizer, the schedule and the iteration count start fresh, so the new run's keys
mean what they always mean. This is how the DiLoCo paper's replicas start (from a model
pretrained with ordinary data-parallel training), and how a run is fine-tuned on other shards.

The checkpoint must hold the same architecture (``model.*`` keys) and vocabulary size as the new
run; the driver checks it before launching (:func:`check_init_from`) and every rank loads it
(:func:`init_weights`).
"""

from __future__ import annotations

from typing import Any

import torch

from contracts.rundir import RunDir
from training.lm_config import GPTModelConfig

KEY = "train.init_from"
# The model keys that decide the shapes of the weights; dropout does not, and may differ.
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias")


def _read(init_from: str) -> dict[str, Any]:
    path = RunDir.at(init_from).checkpoint
    if not path.is_file():
        raise ValueError(
            f"{KEY}: {init_from} has no {path.name}; name the directory of a finished GPT run "
            "(spark-collab train or collab), or clear the key to start from a random init"
        )
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    extra = state.get("extra") or {}
    if "model" not in extra or "vocab_size" not in extra or "model" not in state:
        raise ValueError(f'{KEY}: {path} is not from a GPT run (model.name = "gpt")')
    return state


def _mismatch(state: dict[str, Any], model_cfg: GPTModelConfig, vocab_size: int) -> str | None:
    recorded = state["extra"]["model"]
    for key in SHAPE_KEYS:
        if recorded.get(key) != getattr(model_cfg, key):
            return f"its model.{key} is {recorded.get(key)!r}, this run's {getattr(model_cfg, key)!r}"
    if int(state["extra"]["vocab_size"]) != vocab_size:
        return f"its vocabulary has {state['extra']['vocab_size']} ids, this run's shards {vocab_size}"
    return None


def check_init_from(init_from: str, model_cfg: GPTModelConfig, vocab_size: int) -> None:
    """ValueError naming ``train.init_from`` unless it holds a GPT of this architecture and vocabulary."""
    why = _mismatch(_read(init_from), model_cfg, vocab_size)
    if why is not None:
        raise ValueError(
            f"{KEY}: the run in {init_from} does not fit this one: {why}; start from a run with the same "
            "model keys and token shards, or clear the key"
        )


def init_weights(init_from: str, model_cfg: GPTModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """The model state of the GPT run in ``init_from``, checked against this run's model and vocabulary."""
    state = _read(init_from)
    why = _mismatch(state, model_cfg, vocab_size)
    if why is not None:
        raise ValueError(f"{KEY}: the run in {init_from} does not fit this one: {why}")
    return state["model"]
