"""Warm start: a GPT run that begins from the weights of an earlier GPT run instead of a random init.

``train.init_from`` names a run directory (``spark-collab train`` or ``collab``); the model its
``checkpoint.pt`` holds (for DiLoCo/FedAvg, the outer parameters) becomes the starting point of
the new run, of every rank's replica or peer in collaborative training. Only the weights carry
over: the optimizer, the schedule and the iteration count start fresh, so the new run's keys
mean what they always mean. This is how the DiLoCo paper's replicas start (from a model
pretrained with ordinary data-parallel training), and how a run is fine-tuned on other shards.

The checkpoint must hold the same architecture (``model.*`` keys) and vocabulary size as the new
run, and where both token shards manifests can be read, the same tokenizer (the same number of ids
is not the same ids); the driver checks it before launching (:func:`check_init_from`) and every
rank loads it (:func:`init_weights`).
"""

from __future__ import annotations

from typing import Any

import torch

from contracts.manifest import Manifest
from contracts.rundir import RunDir
from training.checkpoint import read_on_main_rank
from training.dist import DistContext
from training.lm_config import GPTConfig

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


def _tokenizer_sha256(shards: str) -> str | None:
    """The tokenizer checksum a token shards manifest records; None when it cannot be read."""
    try:
        tokenizer = Manifest.read(shards, kind="tokens").get("tokenizer") or {}
    except (OSError, ValueError):
        return None
    return tokenizer.get("sha256")


def _mismatch(state: dict[str, Any], cfg: GPTConfig, vocab_size: int) -> str | None:
    """Why the checkpoint ``state`` cannot start this run, and what to do; None when it can."""
    fix = "start from a run with the same model keys and token shards, or clear the key"
    recorded = state["extra"]["model"]
    for key in SHAPE_KEYS:
        if recorded.get(key) != getattr(cfg.model, key):
            return f"its model.{key} is {recorded.get(key)!r}, this run's {getattr(cfg.model, key)!r}; {fix}"
    if int(state["extra"]["vocab_size"]) != vocab_size:
        return f"its vocabulary has {state['extra']['vocab_size']} ids, this run's shards {vocab_size}; {fix}"
    # The same number of ids is not the same ids: compare the tokenizers where both manifests say.
    theirs, ours = (
        _tokenizer_sha256(str(state["extra"].get("shards", ""))),
        _tokenizer_sha256(cfg.data.shards),
    )
    if theirs is not None and ours is not None and theirs != ours:
        return (
            f"its token shards ({state['extra']['shards']}) were made with another tokenizer than data.shards "
            f"({cfg.data.shards}), so the ids would mean other symbols; make data.shards with "
            f"`spark-collab corpus ... --tokenizer file:{state['extra']['shards']}`"
        )
    return None


def _checked_weights(cfg: GPTConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    state = _read(cfg.train.init_from)
    why = _mismatch(state, cfg, vocab_size)
    if why is not None:
        raise ValueError(f"{KEY}: the run in {cfg.train.init_from} does not fit this one: {why}")
    return state["model"]


def init_weights(cfg: GPTConfig, vocab_size: int, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Collective: the model state of the GPT run in ``train.init_from``, read on the main rank and
    sent to the others; ValueError naming the key (on every rank) unless that run holds a GPT of this
    run's architecture, vocabulary and tokenizer. Read once, on the rank that wrote it when the earlier
    run ran in this process group just before (``main_many``), so that no rank can read it before
    that rank has finished writing it."""
    return read_on_main_rank(lambda: _checked_weights(cfg, vocab_size), ctx, (ValueError,))


def check_init_from(cfg: GPTConfig, vocab_size: int) -> None:
    """The driver's check before launching: the ranks' check, the weights left unused."""
    _checked_weights(cfg, vocab_size)
