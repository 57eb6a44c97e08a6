"""Texts that need no download: the demo's real text, and deterministic Zipf text for benchmarks.

- :func:`demo_text`: the Python documentation topics that CPython ships for ``help()``
  (``pydoc_data.topics``: about 465 KB of English prose and code, 79 topics), joined in the order
  of their names. Every Python installation that has ``pydoc`` has it.
- :func:`zipf_chunks` / :func:`write_zipf_corpus`: generated text of any size for the word-count
  benchmark. Words are built from syllables, drawn with Zipf frequencies (rank ``r`` has weight
  ``1 / (r + 2.7)``, as in Mandelbrot's fit of natural text), with a little capitalisation and
  punctuation so the ``whitespace`` and ``words`` tokenizers disagree the way they do on real
  prose. Lines hold 1-24 words (about 60 characters), with an occasional empty line between
  paragraphs. The same seed and size always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spark_jobs.common.errors import JobInputError

_SYLLABLES = [
    "a", "e", "i", "o", "u", "ka", "to", "ri", "ne", "sa", "lo", "mi", "de", "po", "ru",
    "ta", "ve", "shi", "an", "el", "or", "th", "ing", "ber", "que", "ny", "st", "ch", "ol",
    "um", "ra", "en", "es", "ly", "go", "wa", "zu", "hé", "ür", "ça",
]  # fmt: skip
_PUNCT = [",", "."]
# Per-token variants: plain (most), Capitalised, followed by punctuation, both.
_VARIANT_P = np.array([0.9, 0.04, 0.055, 0.005])
_VOCAB = 60_000
# Ranks start this far into the syllable numbering, so every word has at least two syllables (English-like lengths).
_RANK_OFFSET = 800
_CHUNK_TOKENS = 1_000_000


def word_for_rank(rank: int) -> str:
    """The base word for Zipf rank ``rank`` (0 = most frequent): short words for frequent ranks."""
    n = len(_SYLLABLES)
    parts = []
    value = rank + _RANK_OFFSET
    while True:
        parts.append(_SYLLABLES[value % n])
        value //= n
        if value == 0:
            break
        value -= 1
    return "".join(parts)


def _variant(word: str, variant: int, punct: str) -> str:
    if variant in (1, 3):
        word = word[:1].upper() + word[1:]
    if variant in (2, 3):
        word += punct
    return word


def _token(key: int) -> bytes:
    rest, punct = divmod(key, len(_PUNCT))
    rank, variant = divmod(rest, 4)
    return _variant(word_for_rank(rank), variant, _PUNCT[punct]).encode()


def zipf_chunks(total_bytes: int, seed: int = 0) -> Iterator[bytes]:
    """Yield UTF-8 chunks (each ends with a newline) until at least ``total_bytes`` were produced."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(_VOCAB) + 2.7)
    cdf = np.cumsum(weights / weights.sum())
    produced = 0
    while produced < total_bytes:
        ranks = np.minimum(np.searchsorted(cdf, rng.random(_CHUNK_TOKENS)), _VOCAB - 1)
        variants = rng.choice(len(_VARIANT_P), size=_CHUNK_TOKENS, p=_VARIANT_P)
        puncts = rng.integers(0, len(_PUNCT), size=_CHUNK_TOKENS)
        keys = (ranks * 4 + variants) * len(_PUNCT) + puncts
        line_lengths = rng.integers(1, 25, size=_CHUNK_TOKENS // 6)
        ends = np.cumsum(line_lengths)
        ends = ends[ends <= _CHUNK_TOKENS]
        blank = rng.random(len(ends)) < 0.05
        is_end = np.zeros(_CHUNK_TOKENS, dtype=bool)
        is_end[ends - 1] = True
        is_end[-1] = True
        blank_after = np.zeros(_CHUNK_TOKENS, dtype=bool)
        blank_after[ends[blank] - 1] = True
        uniq, inverse = np.unique(keys, return_inverse=True)
        tokens = np.array([_token(key) for key in uniq.tolist()], dtype=object)
        seps = np.full(_CHUNK_TOKENS, b" ", dtype=object)
        seps[is_end] = b"\n"
        seps[blank_after] = b"\n\n"
        interleaved = np.empty(2 * _CHUNK_TOKENS, dtype=object)
        interleaved[0::2] = tokens[inverse]
        interleaved[1::2] = seps
        chunk = b"".join(interleaved.tolist())
        if produced + len(chunk) > total_bytes:
            cut = chunk.rfind(b"\n", 0, max(total_bytes - produced, 1)) + 1
            chunk = chunk[: cut or len(chunk)]
        produced += len(chunk)
        yield chunk


def write_zipf_corpus(path: Path, total_bytes: int, seed: int = 0) -> Path:
    """Write a corpus of about ``total_bytes`` to ``path`` (atomically, via a temporary name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        for chunk in zipf_chunks(total_bytes, seed):
            out.write(chunk)
    tmp.replace(path)
    return path


DEMO_TEXT_NAME = "python-docs-topics.txt"
DEMO_TEXT_SOURCE = "the Python documentation topics shipped with CPython (pydoc_data.topics)"


def demo_text() -> str:
    """The demo's input: CPython's documentation topics, one after another, a blank line between."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions split pydoc's data into another package
        raise JobInputError(
            "this Python has no pydoc_data.topics (CPython's help texts); install the full standard "
            "library (e.g. Debian's libpython3-stdlib) or count your own text: spark-collab wordcount FILE"
        ) from exc
    return "\n\n".join(topics[name].strip("\n") for name in sorted(topics)) + "\n"
