"""The numpy word hashes split words exactly as the word count's ``words`` tokenizer does."""

from __future__ import annotations

import random

from contracts.wordsplit import words_tokens
from spark_jobs.corpus.wordhash import word_hashes, word_spans

# Letters, digits (ASCII and full-width), underscore, punctuation, Unicode spaces and line breaks,
# characters whose lowercase is longer (İ) or special (ß, ǅ, Σ), CJK, an astral CJK character, an
# emoji and a lone surrogate (JSON can carry one).
ALPHABET = [
    *"abcXYZ _-.,!?\n\t0123９",
    "é",
    "İ",
    "ß",
    "中",
    "文",
    "𠀀",
    "😀",
    "\u00a0",
    "\u2028",
    "\ud800",
    "Σ",
    "ǅ",
]


def test_words_and_hashes_agree_with_the_word_tokenizer() -> None:
    rng = random.Random(0)
    hash_of: dict[str, int] = {}
    for _ in range(3000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        points, starts, ends = word_spans(text)
        words = ["".join(map(chr, points[a:b])) for a, b in zip(starts, ends, strict=True)]
        assert words == words_tokens(text), text
        hashes = word_hashes(text).tolist()
        assert len(hashes) == len(words)
        for word, value in zip(words, hashes, strict=True):
            assert hash_of.setdefault(word, value) == value  # the same word, the same hash
    assert len(hash_of) > 1000
    assert len(set(hash_of.values())) == len(hash_of)  # no two words share a hash


def test_long_words_and_empty_texts() -> None:
    assert len(word_hashes("")) == 0 and len(word_hashes(" ,.!\n")) == 0
    long_word = "x" * 100_000
    hashes = word_hashes(f"{long_word} {long_word}y {long_word}").tolist()
    assert len(hashes) == 3 and hashes[0] == hashes[2] != hashes[1]
