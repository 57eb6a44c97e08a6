"""Rank-side windows over token shards: (x, y) pairs of ``block_size`` tokens, y shifted by one.

Every rank memory-maps all shards of a split (:func:`contracts.tokens.open_token_shard`); a rank
only touches the pages of the windows it reads. A window never crosses a shard boundary; window
starts are numbered 0 .. N-1 across the shards, in shard order.

Training windows are drawn per iteration from a generator seeded with (seed, iteration), the same
on every rank; rank r of W takes its own slice of that global batch. So the windows of an
iteration depend on the seed, the iteration and the rank's slice only: a run resumed at
iteration k reads what an uninterrupted run would have read, and W ranks together read exactly
the batch one process would (which is what makes DDP equal to one process with the same global
batch). Evaluation uses fixed windows, evenly spaced over the split, the same at every evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from contracts.manifest import Manifest, ManifestError
from contracts.tokens import DTYPES, TokenShard, open_token_shard


@dataclass(frozen=True)
class BatchSlice:
    """Which part of an iteration's global batch one forward pass takes."""

    micro_step: int
    """Index of the accumulation pass, 0 .. grad_accum - 1."""
    rank: int
    world_size: int
    micro_batch: int
    """Sequences per rank per pass."""

    def bounds(self) -> tuple[int, int]:
        start = (self.micro_step * self.world_size + self.rank) * self.micro_batch
        return start, start + self.micro_batch


class TokenWindows:
    """All shards of one split of a token shards directory, windowed by ``block_size``."""

    def __init__(
        self,
        shards_dir: str | os.PathLike,
        split: str,
        block_size: int,
        manifest: Manifest | None = None,
        shard_indices: Sequence[int] | None = None,
    ) -> None:
        """``shard_indices``: read only these shards of the split (a replica's own part); None: all."""
        manifest = manifest or Manifest.read(shards_dir, kind="tokens")
        self.where = f"{shards_dir} split {split!r}"
        self.vocab_size = int(manifest.get("vocab_size", 0))
        dtype = manifest.get("token_dtype")
        if dtype not in DTYPES or self.vocab_size < 1:
            raise ManifestError(
                f"{manifest.where}: token_dtype {dtype!r} / vocab_size {self.vocab_size!r} invalid"
            )
        if self.vocab_size > int(np.iinfo(DTYPES[dtype]).max) + 1:
            raise ManifestError(
                f"{manifest.where}: vocab_size {self.vocab_size} does not fit in token_dtype {dtype}; "
                "re-create the token shards"
            )
        self.block_size = block_size
        self.shards: list[TokenShard] = [
            open_token_shard(shards_dir, split, i, manifest=manifest)
            for i in (range(manifest.num_shards(split)) if shard_indices is None else shard_indices)
        ]
        # A window needs block_size + 1 tokens (inputs and the next-token targets).
        per_shard = np.array([max(len(s) - block_size, 0) for s in self.shards], dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(per_shard)])
        self.num_windows = int(self._first[-1])
        if self.num_windows == 0:
            raise ValueError(
                f"data.shards: {self.where} has no shard longer than model.block_size={block_size} tokens; "
                "lower model.block_size or add text"
            )

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets ``[len(starts), block_size]`` (int64) for global window ``starts``."""
        shard_of = np.searchsorted(self._first, starts, side="right") - 1
        rows = np.empty((len(starts), self.block_size + 1), dtype=np.int64)
        for i, (s, start) in enumerate(zip(shard_of, starts, strict=True)):
            offset = int(start - self._first[s])
            rows[i] = self.shards[s].tokens[offset : offset + self.block_size + 1]
        if rows.size and int(rows.max()) >= self.vocab_size:
            raise ValueError(
                f"data.shards: {self.where} holds token id {int(rows.max())} >= vocab_size {self.vocab_size}; "
                "the shards are corrupt, re-run corpus"
            )
        data = torch.from_numpy(rows)
        return data[:, :-1], data[:, 1:]

    def train_starts(self, seed: int, iteration: int, global_batch: int) -> np.ndarray:
        """The window starts of one iteration's global batch (the same on every rank)."""
        rng = np.random.default_rng([seed, iteration])
        return rng.integers(0, self.num_windows, size=global_batch, dtype=np.int64)

    def train_batch(
        self, seed: int, iteration: int, global_batch: int, part: BatchSlice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of iteration ``iteration`` for accumulation pass ``part.micro_step``."""
        lo, hi = part.bounds()
        return self.windows(self.train_starts(seed, iteration, global_batch)[lo:hi])

    def fixed_starts(self, count: int) -> np.ndarray:
        """``count`` window starts spread evenly over the split (evaluation: fixed across a run)."""
        return np.linspace(0, self.num_windows - 1, num=count).round().astype(np.int64)
