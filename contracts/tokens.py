"""Token shards on disk: what ``spark-collab corpus`` writes and a training rank memory-maps.

Layout of a token shards directory::

    DIR/manifest.json                 kind = "tokens" (contracts.manifest)
    DIR/tokenizer.json                the tokenizer (contracts.tokenizer); training, generation and
                                      inference load this one and no other
    DIR/<split>/shard-<nnnnn>.bin     token ids, one flat little-endian array (uint16 or uint32)
    DIR/<split>/shard-<nnnnn>.idx     document start offsets into the .bin, little-endian int64,
                                      n_docs + 1 entries (the last is the token count)

Each shard entry in the manifest's ``splits[split]["shards"]`` records ``index``, ``path`` (the
.bin, relative to DIR), ``index_path``, ``rows`` (= tokens), ``documents``, ``bytes``, ``sha256``
and ``index_sha256``. The manifest's ``extra`` records ``vocab_size``, ``token_dtype`` and
``tokenizer`` (its kind, file name and sha256).

This module needs numpy only; it reads and writes, and knows nothing of Spark or torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.manifest import Manifest, ManifestError

TOKENIZER_FILE = "tokenizer.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
OFFSET_DTYPE = np.dtype("<i8")


def token_dtype_for(vocab_size: int) -> str:
    """The smallest dtype name that holds every id of a ``vocab_size`` vocabulary."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def shard_relpath(split: str, index: int) -> str:
    return f"{split}/shard-{index:05d}.bin"


def index_relpath(split: str, index: int) -> str:
    return f"{split}/shard-{index:05d}.idx"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_token_shard(
    root: str | os.PathLike,
    split: str,
    index: int,
    tokens: np.ndarray,
    doc_lengths: np.ndarray,
    dtype: str,
) -> dict[str, Any]:
    """Write one shard (tokens and document index) under ``root``; return its manifest entry.

    ``doc_lengths[i]`` is the number of tokens of document i; they must add up to ``len(tokens)``.
    Files are written to temporary names and renamed, so a shard file is complete or absent.
    """
    np_dtype = DTYPES[dtype]
    tokens = np.asarray(tokens)
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    if int(lengths.sum()) != len(tokens):
        raise ValueError(
            f"shard {split}/{index}: document lengths add up to {lengths.sum()}, not {len(tokens)}"
        )
    if len(tokens) and (tokens.min() < 0 or tokens.max() > np.iinfo(np_dtype).max):
        raise ValueError(f"shard {split}/{index}: token ids outside {dtype}")
    offsets = np.zeros(len(lengths) + 1, dtype=OFFSET_DTYPE)
    np.cumsum(lengths, out=offsets[1:])
    root = Path(root)
    bin_path, idx_path = root / shard_relpath(split, index), root / index_relpath(split, index)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    for path, array in ((bin_path, tokens.astype(np_dtype, copy=False)), (idx_path, offsets)):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        array.tofile(tmp)
        os.replace(tmp, path)
    return {
        "index": index,
        "path": shard_relpath(split, index),
        "index_path": index_relpath(split, index),
        "rows": len(tokens),
        "documents": len(lengths),
        "bytes": bin_path.stat().st_size,
        "sha256": _sha256_file(bin_path),
        "index_sha256": _sha256_file(idx_path),
    }


@dataclass
class TokenShard:
    """One shard, memory-mapped: ``tokens[doc_offsets[i]:doc_offsets[i + 1]]`` is document i."""

    tokens: np.ndarray
    doc_offsets: np.ndarray
    vocab_size: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1


def open_token_shard(
    root: str | os.PathLike, split: str, index: int, *, verify: bool = False, manifest: Manifest | None = None
) -> TokenShard:
    """Memory-map shard ``index`` of ``split``; checks size, dtype and (with ``verify``) sha256."""
    manifest = manifest or Manifest.read(root, kind="tokens")
    entry = manifest.shard(split, index)
    dtype = manifest.get("token_dtype")
    vocab_size = int(manifest.get("vocab_size", 0))
    if dtype not in DTYPES or vocab_size < 1:
        raise ManifestError(f"{manifest.where}: token_dtype {dtype!r} / vocab_size {vocab_size!r} invalid")
    root = Path(root)
    bin_path, idx_path = root / entry["path"], root / entry["index_path"]
    for path in (bin_path, idx_path):
        if not path.is_file():
            raise ManifestError(f"{path}: missing; the token shards in {root} are incomplete, re-run corpus")
    expected = int(entry["rows"]) * DTYPES[dtype].itemsize
    if bin_path.stat().st_size != expected:
        raise ManifestError(f"{bin_path}: {bin_path.stat().st_size} bytes, the manifest says {expected}")
    if verify:
        for path, key in ((bin_path, "sha256"), (idx_path, "index_sha256")):
            digest = _sha256_file(path)
            if digest != entry[key]:
                raise ManifestError(f"{path}: sha256 {digest} does not match the manifest ({entry[key]})")
    tokens = (
        np.memmap(bin_path, dtype=DTYPES[dtype], mode="r") if expected else np.zeros(0, dtype=DTYPES[dtype])
    )
    offsets = np.fromfile(idx_path, dtype=OFFSET_DTYPE)
    if len(offsets) != int(entry["documents"]) + 1 or (len(offsets) and offsets[-1] != int(entry["rows"])):
        raise ManifestError(f"{idx_path}: document index does not match {bin_path}")
    return TokenShard(tokens=tokens, doc_offsets=offsets, vocab_size=vocab_size)
