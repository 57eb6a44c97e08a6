"""Text from a trained GPT run: its checkpoint plus the tokenizer saved with its token shards.

The run's checkpoint records the architecture, the vocabulary size and the shards directory
(``extra`` of :func:`training.checkpoint.save_checkpoint`); the tokenizer is loaded from that
directory and no other, so ids mean what they meant in training. Sampling draws from a
``torch.Generator`` seeded with ``seed``: the same run, prompt and seed give the same text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from contracts.rundir import RunDir
from contracts.tokenizer import Tokenizer, load_tokenizer
from training.gpt import GPT, generate
from training.lm_config import GPTModelConfig


class RunError(ValueError):
    """The run directory has no GPT checkpoint (the message says what to do)."""


@dataclass
class TrainedGPT:
    model: GPT
    tokenizer: Tokenizer
    shards: str
    iteration: int


def load_run(
    run_dir: str | os.PathLike, device: str = "cpu", tokenizer: Tokenizer | None = None
) -> TrainedGPT:
    """The model of ``run_dir``'s latest checkpoint and the tokenizer of its token shards."""
    from training.lm_loop import build_gpt

    path = RunDir.at(run_dir).checkpoint
    if not path.is_file():
        raise RunError(f"--run {run_dir}: no {path.name}; train a GPT there first (spark-collab train)")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    extra = state.get("extra") or {}
    if "model" not in extra or "vocab_size" not in extra:
        raise RunError(f'--run {run_dir}: {path.name} is not from a GPT run (model.name = "gpt")')
    model = build_gpt(GPTModelConfig(**extra["model"]), int(extra["vocab_size"]))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    tok = tokenizer or load_tokenizer(extra["shards"])
    if tok.vocab_size != model.shape.vocab_size:
        raise RunError(
            f"--run {run_dir}: the tokenizer in {extra['shards']} has {tok.vocab_size} ids, the model "
            f"{model.shape.vocab_size}; the shards were rebuilt after training"
        )
    return TrainedGPT(model=model, tokenizer=tok, shards=str(extra["shards"]), iteration=int(state["step"]))


def sample_text(
    run: TrainedGPT,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int = 1337,
) -> str:
    """``prompt`` and its sampled continuation, decoded (an empty prompt starts a new document)."""
    ids = run.tokenizer.encode(prompt) if prompt else [run.tokenizer.eot_id]
    context = ids[-run.model.shape.block_size :]  # the model sees at most block_size tokens anyway
    device = next(run.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([context], dtype=torch.long, device=device)
    out = generate(run.model, x, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return run.tokenizer.decode(ids + out[0, len(context) :].tolist())
