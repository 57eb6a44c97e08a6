"""The language-model tokenizers: the one saved beside token shards is the one everybody loads.

Three kinds, each saved as ``tokenizer.json`` (:data:`contracts.tokens.TOKENIZER_FILE`):

- ``char``: nanoGPT's shakespeare_char scheme: the sorted set of the corpus's characters, id = rank;
  the end-of-document id comes after them. Round-trips: ``decode(encode(x)) == x``.
- ``words``: the V most frequent words of the corpus, split exactly as the word count splits them
  (:mod:`contracts.wordsplit`), after two special tokens: ``<unk>`` (id 0) and ``<|endoftext|>``
  (id 1). Decoding joins words with spaces (with nothing for ``cjk``), so it does not round-trip.
- ``bpe``: byte-level BPE trained with Hugging Face ``tokenizers``; the file is that library's own
  ``tokenizer.json``, so ``tokenizers.Tokenizer.from_file`` (and ``transformers``) read it too.
  Round-trips.

The end-of-document id (:attr:`Tokenizer.eot_id`) is appended after every document in the shards;
:meth:`Tokenizer.decode` drops it. Imports neither pyspark nor torch; ``tokenizers`` and ``rjieba``
are imported only when a tokenizer needs them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from contracts.atomic import write_bytes_atomic
from contracts.bpe_pieces import PieceEncoder, piece_encoder, repeated_words
from contracts.tokens import TOKENIZER_FILE
from contracts.wordsplit import TOKENIZERS as WORD_SPLITS
from contracts.wordsplit import get_tokenizer as get_word_split

EOT = "<|endoftext|>"
UNK = "<unk>"
FORMAT = "spark-collab-tokenizer"
KINDS = ("char", "words", "bpe")


class TokenizerError(ValueError):
    """A missing or malformed tokenizer file, or text a tokenizer cannot encode."""


class Tokenizer:
    """What the rank side, generation and inference rely on; the concrete kinds follow."""

    kind: ClassVar[str]
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_batch_bytes(self, texts: Sequence[str], dtype: np.dtype) -> list[bytes]:
        """Each text's ids as bytes of ``dtype``: what token shards store."""
        return [np.asarray(ids, dtype=dtype).tobytes() for ids in self.encode_batch(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        """The exact text :meth:`save` writes (its sha256 is :meth:`sha256`)."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (a directory gets ``tokenizer.json`` inside it), atomically."""
        target = Path(path)
        if target.is_dir():
            target = target / TOKENIZER_FILE
        return write_bytes_atomic(target, self.to_json().encode("utf-8"))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def _document(kind: str, **fields: Any) -> str:
    return json.dumps({"format": FORMAT, "kind": kind, **fields}, ensure_ascii=False, indent=1) + "\n"


class CharTokenizer(Tokenizer):
    """One id per character: the sorted characters, then the end-of-document id."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise TokenizerError("char tokenizer: the vocabulary must be distinct single characters")
        self.chars = sorted(chars)
        self.eot_id = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        # Sorted code points: encoding is one searchsorted over the text's UTF-32 code units.
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def train(cls, texts: Sequence[str]) -> CharTokenizer:
        return cls(sorted(set().union(*map(set, texts))) if texts else [])

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if not len(codes):
            return np.zeros(0, dtype=np.int64)
        if not len(self._codes):
            raise TokenizerError(f"char tokenizer: {text[0]!r} is not in the (empty) vocabulary")
        ids = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
        unknown = self._codes[ids] != codes
        if unknown.any():
            raise TokenizerError(
                f"char tokenizer: {chr(codes[np.argmax(unknown)])!r} is not in the vocabulary"
            )
        return ids.astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids if i != self.eot_id)

    def to_json(self) -> str:
        return _document(self.kind, chars="".join(self.chars), eot=EOT, vocab_size=self.vocab_size)


class WordTokenizer(Tokenizer):
    """``<unk>``, ``<|endoftext|>``, then the words, most frequent first."""

    kind = "words"
    UNK_ID = 0
    EOT_ID = 1

    def __init__(self, words: Sequence[str], split: str = "words") -> None:
        if split not in WORD_SPLITS:
            raise TokenizerError(f"words tokenizer: unknown split {split!r}; one of {', '.join(WORD_SPLITS)}")
        self.words = list(words)
        self.split = split
        self.eot_id = self.EOT_ID
        self.vocab_size = len(self.words) + 2
        self._itos = [UNK, EOT, *self.words]
        self._stoi = {w: i + 2 for i, w in enumerate(self.words)}
        self._split = get_word_split(split)

    def encode(self, text: str) -> list[int]:
        get = self._stoi.get
        return [get(w, self.UNK_ID) for w in self._split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        joiner = "" if self.split == "cjk" else " "
        return joiner.join(self._itos[i] for i in ids if i != self.eot_id)

    def to_json(self) -> str:
        return _document(self.kind, split=self.split, specials=[UNK, EOT], words=self.words)


def _import_tokenizers() -> Any:
    # Spark forks its Python workers; a Rust thread pool used before a fork is unusable after it.
    # Every worker already is one of N parallel tasks, so the library's own pool would only
    # oversubscribe the cores: keep it off unless the caller chose otherwise.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tokenizers

    return tokenizers


def _bpe_trainer(tk: Any, vocab_size: int, show_progress: bool) -> Any:
    return tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )


class BpeTokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style pre-tokenization, no prefix space) from ``tokenizers``."""

    kind = "bpe"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        eot = backend.token_to_id(EOT)
        if eot is None:
            raise TokenizerError(f"bpe tokenizer: no {EOT} token in the vocabulary")
        self.eot_id = int(eot)
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        self._added = [t.content for t in backend.get_added_tokens_decoder().values()]
        self._piece_encoders: dict[str, PieceEncoder | None] = {}

    @classmethod
    def train(cls, texts: Any, vocab_size: int, *, show_progress: bool = False) -> BpeTokenizer:
        """Train on an iterable of strings (or of lists of strings) without holding them all."""
        tk = _import_tokenizers()
        backend = tk.Tokenizer(tk.models.BPE())
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        backend.train_from_iterator(texts, trainer=_bpe_trainer(tk, vocab_size, show_progress))
        return cls(backend)

    @classmethod
    def train_from_counts(
        cls, counts: Iterable[tuple[str, int]], vocab_size: int, *, show_progress: bool = False
    ) -> BpeTokenizer:
        """The tokenizer :meth:`train` gives, trained from the byte-level mapped pieces of the texts
        and their counts (:class:`contracts.bpe_pieces.PieceCounter`) instead of the texts.

        The trainer only counts the words its pre-tokenizer yields, so it is fed each piece as often
        as it occurs, split on whitespace (a cheap split next to GPT-2's pattern, and mapped pieces
        hold no whitespace); it then sees the same counts and makes the same merges. The
        pre-tokenizer is set to the byte-level one afterwards, so the saved file is :meth:`train`'s."""
        tk = _import_tokenizers()
        backend = tk.Tokenizer(tk.models.BPE())
        backend.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
        backend.train_from_iterator(
            repeated_words(counts), trainer=_bpe_trainer(tk, vocab_size, show_progress)
        )
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        return cls(backend)

    @classmethod
    def from_json(cls, text: str) -> BpeTokenizer:
        return cls(_import_tokenizers().Tokenizer.from_str(text))

    def encode(self, text: str) -> list[int]:
        if EOT in text:
            return self._encode_with_literal_eot(text)
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        # The fast variant skips the character offsets, which nothing here uses (about 20% of the
        # time on mixed English and Chinese text); older releases of the library lack it.
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encoded = [e.ids for e in encode(texts, add_special_tokens=False)]
        return [
            self._encode_with_literal_eot(t) if EOT in t else ids
            for t, ids in zip(texts, encoded, strict=True)
        ]

    def encode_batch_bytes(self, texts: Sequence[str], dtype: np.dtype) -> list[bytes]:
        """As the base class, piece by piece with each distinct piece encoded once
        (:mod:`contracts.bpe_pieces`) where this tokenizer's pipeline allows it. Texts holding an
        added token's text (such as ``<|endoftext|>``), or a character that the piece pattern and
        the library classify differently, go through :meth:`encode_batch`."""
        dtype = np.dtype(dtype)
        if dtype.str not in self._piece_encoders:
            self._piece_encoders[dtype.str] = piece_encoder(self.backend, dtype)
        pieces = self._piece_encoders[dtype.str]
        if pieces is None:
            return super().encode_batch_bytes(texts, dtype)
        texts = list(texts)
        holds_added = np.fromiter(
            (any(a in t for a in self._added) for t in texts), dtype=bool, count=len(texts)
        )
        by_library = pieces.unsure_texts(texts) | holds_added
        if not by_library.any():
            return pieces.encode_bytes(texts)
        fast, slow = np.flatnonzero(~by_library).tolist(), np.flatnonzero(by_library).tolist()
        out: list[bytes] = [b""] * len(texts)
        for i, encoded in zip(fast, pieces.encode_bytes([texts[i] for i in fast]), strict=True):
            out[i] = encoded
        for i, encoded in zip(slow, super().encode_batch_bytes([texts[i] for i in slow], dtype), strict=True):
            out[i] = encoded
        return out

    def _encode_with_literal_eot(self, text: str) -> list[int]:
        """A document that contains the text ``<|endoftext|>``: ``tokenizers`` would turn it into the
        end-of-document id, cutting the document in two inside the shards. Encode it as plain text
        instead, in two halves that the special-token matcher cannot see whole."""
        half = len(EOT) // 2
        literal = self.backend.encode_batch([EOT[:half], EOT[half:]], add_special_tokens=False)
        literal_ids = literal[0].ids + literal[1].ids
        ids: list[int] = []
        for i, part in enumerate(text.split(EOT)):
            if i:
                ids += literal_ids
            if part:
                ids += self.backend.encode(part, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode([i for i in ids if i != self.eot_id], skip_special_tokens=False)

    def to_json(self) -> str:
        return self.backend.to_str(pretty=False) + "\n"


def tokenizer_from_json(text: str, where: str = TOKENIZER_FILE) -> Tokenizer:
    """The tokenizer a ``tokenizer.json`` text describes."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{where}: not valid JSON ({exc}); re-run corpus") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        if doc.get("kind") == "char":
            return CharTokenizer(list(doc["chars"]))
        if doc.get("kind") == "words":
            return WordTokenizer(doc["words"], doc["split"])
        raise TokenizerError(f"{where}: unknown tokenizer kind {doc.get('kind')!r}; expected char or words")
    if isinstance(doc, dict) and isinstance(doc.get("model"), dict) and doc["model"].get("type") == "BPE":
        return BpeTokenizer.from_json(text)
    raise TokenizerError(f"{where}: not a spark-collab or Hugging Face BPE tokenizer; re-run corpus")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load from a token shards directory (its ``tokenizer.json``) or from the file itself."""
    target = Path(path)
    if target.is_dir():
        target = target / TOKENIZER_FILE
    if not target.is_file():
        raise TokenizerError(f"{target}: no tokenizer; is {path} an output of `spark-collab corpus`?")
    return tokenizer_from_json(target.read_text(encoding="utf-8"), str(target))
