"""Word splitting, defined on one line of text; shared by the word count, the corpus job's ``words:V``
tokenizer and everything that loads that tokenizer (training, generation, inference).

Pure Python (``rjieba`` imported lazily for ``cjk``); imports neither pyspark nor torch.

Every splitter is defined on a single line of text (no line terminator). Because each of them
treats ``\\n`` as a separator and never lets a token span it, splitting a block of lines joined
with ``\\n`` gives exactly the tokens of the lines one by one.

- ``whitespace``: ``line.split()``: any character Python calls whitespace (including ``\\x1c``-``\\x1f``,
  ``\\x85``, ``\\xa0``, ``\\u2003``...), no empty tokens, case kept.
- ``words``: ``re.findall(r"\\w+", line.lower())``.
- ``cjk``: ``words``, then every run of Han characters inside a word is segmented with rjieba
  (jieba-rs); other scripts stay as in ``words``; punctuation is dropped because ``\\w`` never matches it.

A U+FEFF (byte-order mark) at the start of a line is removed first: that is where a file's BOM lands,
so a BOM is never part of a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

BOM = "\ufeff"
TOKENIZERS = ("whitespace", "words", "cjk")

_WORD = re.compile(r"\w+")
# Han ideographs: CJK Unified Ideographs, Extension A, compatibility ideographs and the
# supplementary-plane extensions (B and later).
_HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_RUN = re.compile(f"[{_HAN_CLASS}]+")
_HAS_HAN = re.compile(f"[{_HAN_CLASS}]")
_HAN_OR_OTHER = re.compile(f"[{_HAN_CLASS}]+|[^{_HAN_CLASS}]+")


_LINE_START_BOM = re.compile("(?:^|(?<=[\r\n]))\ufeff")


def strip_line_boms(text: str) -> str:
    """Drop one U+FEFF at the start of ``text`` and at every line start (after LF or CR)."""
    if BOM not in text:
        return text
    return _LINE_START_BOM.sub("", text)


def whitespace_tokens(text: str) -> list[str]:
    """``str.split()`` semantics."""
    return strip_line_boms(text).split()


def words_tokens(text: str) -> list[str]:
    """``re.findall(r"\\w+", text.lower())`` semantics."""
    # U+FEFF is not \w, so a BOM can never end up inside a token here.
    return _WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _jieba() -> Callable[[str], list[str]]:
    import rjieba  # imported lazily: loading the dictionary takes ~0.3 s, only cjk needs it

    return rjieba.cut


def _segment_word(word: str) -> Iterable[str]:
    if not _HAS_HAN.search(word):
        return (word,)
    cut = _jieba()
    pieces: list[str] = []
    for run in _HAN_OR_OTHER.findall(word):
        if _HAN_RUN.fullmatch(run):
            # rjieba only ever sees Han text here, so every piece is a run of Han characters.
            pieces.extend(p for p in cut(run) if p)
        else:
            pieces.append(run)
    return pieces


def cjk_tokens(text: str) -> list[str]:
    """``words``, with Han runs segmented by rjieba."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        tokens.extend(_segment_word(word))
    return tokens


_BY_NAME: dict[str, Callable[[str], list[str]]] = {
    "whitespace": whitespace_tokens,
    "words": words_tokens,
    "cjk": cjk_tokens,
}


def get_tokenizer(name: str) -> Callable[[str], list[str]]:
    """The tokenizer called ``name`` (one of :data:`TOKENIZERS`)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}") from None
