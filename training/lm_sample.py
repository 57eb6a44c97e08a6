"""Text from a trained GPT run: its checkpoint plus the tokenizer saved with its token shards.

The run's checkpoint records the architecture, the vocabulary size and the shards directory
(``extra`` of :func:`training.checkpoint.save_checkpoint`); the tokenizer is loaded from that
directory and no other, so ids mean what they meant in training. Sampling draws from a
``torch.Generator`` seeded with ``seed``: the same run, prompt and seed give the same text.

:func:`sample_ids` is the one sampling path: ``spark-collab generate`` calls it through
:func:`sample_text`, and ``spark-collab predict --generate`` in Spark's Python workers, with one
generator per row seeded by :func:`row_seed`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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


def row_seed(seed: int, row_id: int) -> int:
    """The sampling seed of the row ``row_id`` in a job seeded with ``seed``.

    A row's completion then depends on its id alone, not on which batch or partition it lands in.
    SeedSequence mixes both numbers (``seed + row_id`` would give row 1 of seed 0 the text of row 0
    of seed 1); negative ids are taken modulo 2**64, since SeedSequence wants non-negative entries.
    """
    return int(np.random.SeedSequence([seed, row_id % 2**64]).generate_state(1)[0])


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids sampling continues: the prompt's, or for an empty prompt the end-of-document id (a new
    document). TokenizerError when the tokenizer cannot encode the prompt."""
    return tokenizer.encode(prompt) if prompt else [tokenizer.eot_id]


def sample_ids(
    model: GPT,
    ids: Sequence[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
) -> list[int]:
    """The ``max_new_tokens`` ids sampled after ``ids`` (not ``ids`` themselves).

    ``top_k`` None or 0 samples among all ids; ``temperature`` 0 picks the most likely one.
    """
    context = list(ids)[-model.shape.block_size :]  # the model sees at most block_size tokens anyway
    device = next(model.parameters()).device
    x = torch.tensor([context], dtype=torch.long, device=device)
    out = generate(
        model, x, max_new_tokens, temperature=temperature, top_k=top_k or None, generator=generator
    )
    return out[0, len(context) :].tolist()


def sample_text(
    run: TrainedGPT,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int = 1337,
) -> str:
    """``prompt`` and its sampled continuation, decoded (an empty prompt starts a new document)."""
    ids = prompt_ids(run.tokenizer, prompt)
    device = next(run.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    new = sample_ids(run.model, ids, max_new_tokens, temperature, top_k, generator)
    return run.tokenizer.decode(ids + new)
