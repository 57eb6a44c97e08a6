"""Stable 64-bit hashes of a text's words, computed with numpy over its code points.

Words are those of the word count's ``words`` tokenizer: runs of ``\\w`` characters (``str.isalnum``
or ``_``, as Python's ``re`` defines ``\\w``) of the lowercased text. Each word is hashed by its code
points, twice, as a polynomial modulo the prime ``2**31 - 1`` with two bases; the two 31-bit halves
are joined and mixed (the SplitMix64 finalizer) into 64 bits. Nothing depends on the process, so
every worker gives a word the same hash.

Hashing word by word in Python (a dictionary lookup, and a cryptographic hash on a miss) cost more
than twice as much on mixed English and Chinese text, where most runs of Chinese characters are
words seen once.
"""

from __future__ import annotations

import numpy as np

_PRIME = np.uint64(2**31 - 1)
_BASES = (np.uint64(1_000_003), np.uint64(998_244_353 % (2**31 - 1)))
_UNICODE_SIZE = 0x110000


class _Tables:
    """Per-process lookup tables, built on first use."""

    word_chars: np.ndarray | None = None
    powers: tuple[np.ndarray, ...] = (np.ones(1, np.uint64), np.ones(1, np.uint64))


def _word_chars() -> np.ndarray:
    if _Tables.word_chars is None:
        table = np.fromiter((chr(c).isalnum() for c in range(_UNICODE_SIZE)), dtype=bool, count=_UNICODE_SIZE)
        table[ord("_")] = True
        _Tables.word_chars = table
    return _Tables.word_chars


def _powers(length: int) -> tuple[np.ndarray, ...]:
    """``base**j mod p`` for ``j < length``, per base (grown by doubling, kept for the process: only
    ever as long as the longest word seen)."""
    current = _Tables.powers
    if len(current[0]) < length:
        grown = []
        for base, powers in zip(_BASES, current, strict=True):
            while len(powers) < length:
                step = _pow_mod(base, len(powers))
                powers = np.concatenate([powers, powers * step % _PRIME])
            grown.append(powers)
        _Tables.powers = current = tuple(grown)
    return current


def _pow_mod(base: np.uint64, exponent: int) -> np.uint64:
    return np.uint64(pow(int(base), exponent, int(_PRIME)))


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def word_spans(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code points of ``text.lower()``, word starts, word ends): ``re.finditer(r"\\w+", text.lower())``."""
    points = np.frombuffer(text.lower().encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    in_word = np.zeros(len(points) + 2, dtype=np.int8)
    in_word[1:-1] = _word_chars()[points]
    change = np.diff(in_word)
    return points, np.flatnonzero(change == 1), np.flatnonzero(change == -1)


def word_hashes(text: str) -> np.ndarray:
    """The hash of each word of ``text``, in order (uint64)."""
    points, starts, ends = word_spans(text)
    if not len(starts):
        return np.empty(0, np.uint64)
    lengths = ends - starts
    # Each character's offset inside its word (characters between words get junk, never summed).
    word_of = np.zeros(len(points), dtype=np.int64)
    word_of[starts] = 1
    word_of = np.cumsum(word_of) - 1
    offset = np.arange(len(points)) - starts[np.maximum(word_of, 0)]
    offset[offset < 0] = 0
    offset = np.minimum(offset, lengths.max() - 1)
    # reduceat over [start, end) pairs; the sums over the gaps between words are dropped.
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    values = points.astype(np.uint64)
    halves = []
    for powers in _powers(int(lengths.max())):
        terms = np.empty(len(points) + 1, np.uint64)
        np.remainder(values * powers[offset], _PRIME, out=terms[:-1])
        terms[-1] = 0  # a word that ends the text: its end bound is one past the last character
        halves.append(np.add.reduceat(terms, bounds)[0::2] % _PRIME)
    return _mix((halves[0] << np.uint64(31)) | halves[1])
