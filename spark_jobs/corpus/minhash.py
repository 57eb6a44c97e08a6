"""MinHash signatures and LSH band keys of documents; runs in Spark's Python workers (``mapInArrow``).

A document's shingles are its runs of ``ngram`` words, words split as the word count's ``words``
tokenizer (lowercase ``\\w+``); a document shorter than ``ngram`` words is one shingle. Each word gets
a stable 64-bit hash (:mod:`spark_jobs.corpus.wordhash`, the same in every process, unlike Python's
``hash``), a shingle the sum of its words' hashes times per-position odd constants (mod 2**64), and
the signature holds, for
each of ``bands * rows`` multiply-shift hash functions ``(a * x + b) mod 2**64 >> 32``, the minimum
over the document's shingles. Band ``i``'s key is a 63-bit hash of its ``rows`` values; two
documents are a candidate pair when any band key agrees. Everything is seeded by the job's seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from spark_jobs.corpus.options import MinHashOptions
from spark_jobs.corpus.wordhash import word_hashes

SIGNATURES_DDL = "doc_id long, sig array<long>, bands array<long>"
# Shingles hashed per step: bounds the (shingles x hashes) matrix of one long document.
SHINGLE_CHUNK = 4096


def hash_functions(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each multiply-shift hash; ``a`` odd."""
    rng = np.random.default_rng([seed, 0x5EED])
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def _position_constants(ngram: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x5417])
    return rng.integers(1, 2**63, size=ngram, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class Shingler:
    """Word n-gram hashes of documents."""

    def __init__(self, ngram: int, seed: int) -> None:
        self.ngram = ngram
        self.constants = _position_constants(ngram, seed)

    def shingles(self, text: str) -> np.ndarray:
        """The shingle hashes of ``text`` (uint64, repeats included; empty when it has no word)."""
        words = word_hashes(text)
        if not len(words):
            return words
        width = min(self.ngram, len(words))
        count = len(words) - width + 1
        with np.errstate(over="ignore"):
            hashes = words[:count] * self.constants[0]
            for j in range(1, width):
                hashes += words[j : j + count] * self.constants[j]
        return hashes


def signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum over shingles of each hash function (uint32 values held in int64); a shingle that
    repeats changes no minimum, so repeats are not removed first."""
    best = np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(shingles), SHINGLE_CHUNK):
            chunk = shingles[start : start + SHINGLE_CHUNK, None]
            np.minimum(best, ((chunk * a + b) >> np.uint64(32)).min(axis=0), out=best)
    return best.astype(np.int64)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """One non-negative 63-bit key per band; the band index is kept apart (its list position)."""
    raw = sig.astype("<u4").tobytes()
    step = rows * 4
    return [
        int.from_bytes(hashlib.blake2b(raw[i * step : (i + 1) * step], digest_size=8).digest(), "little") >> 1
        for i in range(bands)
    ]


class Signer:
    """Signature and band keys of one document at a time; built in the worker (it holds a cache)."""

    def __init__(self, options: MinHashOptions, seed: int) -> None:
        self.options = options
        self.shingler = Shingler(options.ngram, seed)
        self.a, self.b = hash_functions(options.num_perm, seed)

    def sign(self, text: str) -> tuple[list[int], list[int]] | None:
        """(signature, band keys) of ``text``; None when it has no word (it cannot be a near duplicate
        by this measure)."""
        shingles = self.shingler.shingles(text)
        if not len(shingles):
            return None
        sig = signature(shingles, self.a, self.b)
        return sig.tolist(), band_keys(sig, self.options.bands, self.options.rows)


def signature_arrays(signed: list[tuple[list[int], list[int]] | None]) -> tuple[pa.Array, pa.Array]:
    """The ``sig`` and ``bands`` columns (nulls where a document has no word)."""
    long_list = pa.list_(pa.int64())
    sigs = pa.array([s[0] if s else None for s in signed], long_list)
    return sigs, pa.array([s[1] if s else None for s in signed], long_list)


def signature_task(options: MinHashOptions, seed: int):
    """The ``mapInArrow`` function: ``doc_id, text`` in, SIGNATURES_DDL out; documents without words
    get no row."""

    def sign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        signer = Signer(options, seed)
        for batch in batches:
            signed = [signer.sign(text) for text in batch.column(1).to_pylist()]
            keep = pa.array([s is not None for s in signed])
            sigs, bands = signature_arrays(signed)
            ids = batch.column(0).filter(keep)
            yield pa.RecordBatch.from_arrays(
                [ids, sigs.filter(keep), bands.filter(keep)], names=["doc_id", "sig", "bands"]
            )

    return sign
