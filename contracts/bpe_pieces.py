"""Byte-level BPE encoding piece by piece, each distinct piece's ids computed once.

A byte-level BPE tokenizer of GPT-2's kind (the one :class:`contracts.tokenizer.BpeTokenizer`
trains) encodes a text in two steps: its pre-tokenizer cuts the text into pieces with GPT-2's
pattern and maps each piece's UTF-8 bytes to printable characters; its BPE model then turns each
piece, on its own, into ids. Natural text repeats its pieces (mostly words with their leading
space), so most of the second step is work done before, and the library's own word cache holds
only 10,000 of them.

:class:`PieceEncoder` does the first step with the same pattern in the ``regex`` package (which
classifies every code point as the library's pattern does; ``tests/test_bpe_pieces.py`` compares
the two over all of Unicode), hands the pieces it has not seen before to the library's BPE model,
and joins the remembered ids of the others. The ids are those of the library's ``encode``; the
tests check that on mixed English and Chinese text too.

It applies only where those two steps are the whole pipeline: no normalizer, the ByteLevel
pre-tokenizer with GPT-2's pattern and no prefix space, a BPE model without dropout.
:func:`piece_encoder` returns None for any other tokenizer, which then goes through the library.
Texts that hold an added token's text (such as the end-of-document token) are the caller's to
route around it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

# GPT-2's pre-tokenization pattern, the one ``tokenizers``' ByteLevel pre-tokenizer uses.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Distinct pieces remembered per encoder before the memory starts over; each costs a few hundred
# bytes, so a worker's memory stays bounded on text whose pieces rarely repeat.
MAX_PIECES = 500_000


def byte_level_table() -> dict[int, str]:
    """GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the other bytes,
    in order, for the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_CHARS = str.maketrans(byte_level_table())


def byte_level(piece: str) -> str:
    """``piece`` as the ByteLevel pre-tokenizer maps it: its UTF-8 bytes, read as Latin-1, each
    translated to its character (one ``str.translate``)."""
    return piece.encode("utf-8").decode("latin-1").translate(_BYTE_CHARS)


# Each code point is tried next to a letter, a digit, punctuation, a space and a newline: a code point
# that the two sides put in different classes (letter, number, space, other) is cut differently.
_PROBE = "a{0}1!{0} {0}\n"
_UNICODE_SIZE = 0x110000
_SURROGATES = slice(0xD800, 0xE000)


def unsure_among(points: Sequence[int], pattern: Any, pre_tokenizer: Any) -> list[int]:
    """The code points of ``points`` that ``pattern`` (compiled GPT2_PATTERN) and the library's
    ``pre_tokenizer`` cut differently: characters assigned in a newer Unicode version than one of the
    two knows."""
    if not len(points):
        return []
    text = "".join(_PROBE.format(chr(c)) for c in points)
    ours = np.cumsum([0, *map(len, pattern.findall(text))])[:-1]
    theirs = np.fromiter((start for _, (start, _) in pre_tokenizer.pre_tokenize_str(text)), np.int64)
    differing = np.setxor1d(ours, theirs) // len(_PROBE.format("x"))
    return sorted({points[i] for i in differing.tolist()})


class CodePointCheck:
    """Which texts hold a code point that the pattern and the library cut differently. Each code
    point is probed once per process, the first time a text holds it."""

    def __init__(self, pattern: Any, pre_tokenizer: Any) -> None:
        self.pattern, self.pre_tokenizer = pattern, pre_tokenizer
        self.checked = np.zeros(_UNICODE_SIZE, dtype=bool)
        self.unsure = np.zeros(_UNICODE_SIZE, dtype=bool)
        # A lone surrogate cannot reach the library at all: such texts get the library's own error.
        self.checked[_SURROGATES] = self.unsure[_SURROGATES] = True

    def unsure_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One bool per text: True where the text must go through the library."""
        codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        new = np.unique(codes[~self.checked[codes]])
        if len(new):
            self.unsure[unsure_among(new.tolist(), self.pattern, self.pre_tokenizer)] = True
            self.checked[new] = True
        hits = np.concatenate([[0], np.cumsum(self.unsure[codes])])
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        ends = np.cumsum(lengths)
        return hits[ends] - hits[ends - lengths] > 0


class PieceEncoder:
    """Encodes texts to token bytes of one dtype, remembering each distinct piece's ids."""

    def __init__(self, model: Any, pre_tokenizer: Any, dtype: np.dtype) -> None:
        import regex

        self.model = model
        self.dtype = np.dtype(dtype)
        self.pattern = regex.compile(GPT2_PATTERN)
        self.check = CodePointCheck(self.pattern, pre_tokenizer)
        self.known: dict[str, bytes] = {}

    def unsure_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One bool per text: True for those :meth:`encode_bytes` must not be given."""
        return self.check.unsure_texts(texts)

    def encode_bytes(self, texts: Sequence[str]) -> list[bytes]:
        """Each text's ids as bytes of :attr:`dtype` (nothing appended); for texts that
        :meth:`unsure_texts` passed."""
        pieces = [self.pattern.findall(t) for t in texts]
        known = self.known
        new = {p for text_pieces in pieces for p in text_pieces if p not in known}
        if len(known) + len(new) > MAX_PIECES:
            known.clear()
            new = {p for text_pieces in pieces for p in text_pieces}
        for piece in new:
            ids = [token.id for token in self.model.tokenize(byte_level(piece))]
            known[piece] = np.asarray(ids, dtype=self.dtype).tobytes()
        return [b"".join(map(known.__getitem__, text_pieces)) for text_pieces in pieces]


def piece_encoder(backend: Any, dtype: np.dtype) -> PieceEncoder | None:
    """A :class:`PieceEncoder` for the ``tokenizers.Tokenizer`` ``backend``, or None when its pipeline
    is not exactly GPT-2's byte-level pre-tokenization followed by a deterministic BPE model."""
    try:
        import regex  # noqa: F401
    except ImportError:
        return None
    config = json.loads(backend.to_str())
    pre = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    byte_level = (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )
    if config.get("normalizer") is not None or not byte_level:
        return None
    if model.get("type") != "BPE" or model.get("dropout") is not None:
        return None
    return PieceEncoder(backend.model, backend.pre_tokenizer, dtype)


class PieceCounter:
    """The pieces of many texts, counted as the library's BPE trainer counts its words: each piece
    byte-level mapped, texts holding an unsure code point cut by the library's own pre-tokenizer.
    Counts of disjoint sets of texts add up, so partitions can be counted apart and summed."""

    def __init__(self) -> None:
        import regex
        import tokenizers

        self.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.pattern = regex.compile(GPT2_PATTERN)
        self.check = CodePointCheck(self.pattern, self.pre_tokenizer)
        self.raw: Counter[str] = Counter()
        """Pieces as cut from the text, mapped only in :meth:`counts` (once per distinct piece)."""
        self.mapped: Counter[str] = Counter()

    def add(self, texts: Sequence[str]) -> None:
        for text, unsure in zip(texts, self.check.unsure_texts(texts), strict=True):
            if unsure:
                self.mapped.update(piece for piece, _ in self.pre_tokenizer.pre_tokenize_str(text))
            else:
                self.raw.update(self.pattern.findall(text))

    def counts(self) -> Counter[str]:
        """Byte-level mapped piece -> count."""
        out = Counter(self.mapped)
        for piece, count in self.raw.items():
            out[byte_level(piece)] += count
        return out


# Characters per string handed to the trainer when it is fed counts.
_FEED_CHARS = 1 << 16


def repeated_words(counts: Iterable[tuple[str, int]]) -> Iterator[str]:
    """Strings of space-separated words, each word as many times as its count: what a trainer that
    splits on whitespace counts back into ``counts``. Byte-level mapped pieces hold no whitespace
    (every byte maps to a printable character), so the split gives the pieces back exactly."""
    parts: list[str] = []
    size = 0
    for word, count in counts:
        per_string = max(1, _FEED_CHARS // (len(word) + 1))
        while count > 0:
            n = min(count, per_string)
            parts.append((word + " ") * n)
            size += (len(word) + 1) * n
            count -= n
            if size >= _FEED_CHARS:
                yield "".join(parts)
                parts, size = [], 0
    if parts:
        yield "".join(parts)
