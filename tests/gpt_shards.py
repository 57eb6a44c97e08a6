"""Test helpers for the GPT path: tiny character-level token shards and GPT configs.

The shards are written with the token-shard contract (``contracts.tokens.write_token_shard``, a
``kind="tokens"`` manifest and the char tokenizer saved beside them), as the corpus job writes
them, without Spark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contracts.manifest import Manifest
from contracts.tokenizer import CharTokenizer
from contracts.tokens import TOKENIZER_FILE, token_dtype_for, write_token_shard

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
)


def char_shards(root: Path, text: str = TEXT, val_fraction: float = 0.1, train_shards: int = 1) -> Path:
    """Write ``text`` as char token shards under ``root``: the first 1 - val_fraction to train
    (in ``train_shards`` pieces), the rest to val. Returns ``root``."""
    tokenizer = CharTokenizer.train([text])
    ids = np.array(tokenizer.encode(text), dtype=np.int64)
    cut = int(len(ids) * (1 - val_fraction))
    dtype = token_dtype_for(tokenizer.vocab_size)
    splits: dict[str, dict] = {}
    for split, part, pieces in (("train", ids[:cut], train_shards), ("val", ids[cut:], 1)):
        entries = []
        for i, chunk in enumerate(np.array_split(part, pieces)):
            entries.append(write_token_shard(root, split, i, chunk, np.array([len(chunk)]), dtype))
        splits[split] = {"shards": entries}
    Manifest(
        kind="tokens",
        splits=splits,
        source={"text_chars": len(text)},
        extra={
            "vocab_size": tokenizer.vocab_size,
            "token_dtype": dtype,
            "tokenizer": {"kind": "char", "file": TOKENIZER_FILE, "sha256": tokenizer.sha256()},
        },
    ).write(root)
    tokenizer.save(root / TOKENIZER_FILE)
    return root


def gpt_overrides(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    """A tiny, fast GPT config (2 layers, 32 dims, block 16) on ``shards``; ``extra`` last."""
    return [
        "model.name=gpt",
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=32",
        "model.block_size=16",
        f"data.shards='{shards}'",
        f"run.dir='{run_dir}'",
        "run.plots=false",
        "launch.num_processes=1",
        "train.batch_size=8",
        "train.max_iters=6",
        "train.eval_interval=3",
        "train.eval_iters=2",
        "train.log_interval=3",
        "optim.warmup_iters=2",
        "optim.lr_decay_iters=6",
        *extra,
    ]
