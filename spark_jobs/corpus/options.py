"""The corpus job's options as one typed object, and the parsing of its compact command-line specs."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.wordsplit import TOKENIZERS as WORD_SPLITS
from spark_jobs.common.errors import JobInputError

DOC_UNITS = ("file", "paragraph", "line")
DEDUP_STAGES = ("exact", "minhash")
# Byte-level BPE starts from 256 byte symbols plus the end-of-document token.
BPE_MIN_VOCAB = 258


@dataclass(frozen=True)
class DocSpec:
    """What one document is: ``unit`` is file/paragraph/line (text inputs), jsonl or parquet."""

    unit: str
    field: str | None = None
    """The JSON field (``jsonl``) or Parquet column (``parquet``) that holds the text."""

    @property
    def spec(self) -> str:
        return f"{self.unit}:{self.field}" if self.field else self.unit


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str
    """char, words or bpe (trained on this corpus), or file (an earlier corpus output's tokenizer)."""
    vocab: int = 0
    """V of words:V and bpe:V; 0 for char (its vocabulary is the data's characters) and file."""
    path: str = ""
    """file: the tokenizer.json (or the corpus output directory holding it) to tokenize with."""

    @property
    def spec(self) -> str:
        if self.kind == "file":
            return f"file:{self.path}"
        return f"{self.kind}:{self.vocab}" if self.vocab else self.kind


@dataclass(frozen=True)
class MinHashOptions:
    threshold: float = 0.8
    """Documents whose estimated Jaccard similarity of shingle sets is at least this are duplicates."""
    ngram: int = 5
    """Shingles are runs of this many words (split as the word count's ``words``)."""
    bands: int = 20
    """LSH bands; a pair becomes a candidate when all rows of one band agree."""
    rows: int = 6
    """MinHash values per band; bands * rows hashes per document."""

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


@dataclass(frozen=True)
class CorpusOptions:
    """Everything that decides the output; the same options and inputs give the same bytes."""

    docs: DocSpec = DocSpec("file")
    tokenizer: TokenizerSpec = TokenizerSpec("char")
    word_split: str = "words"
    """How ``words:V`` splits text: one of the word count's tokenizers (whitespace, words, cjk)."""
    dedup: tuple[str, ...] = ()
    """Dedup stages in order, a subset of ("exact", "minhash")."""
    minhash: MinHashOptions = MinHashOptions()
    min_chars: int = 1
    """Documents shorter than this (in characters) are dropped."""
    max_chars: int = 0
    """Documents longer than this are dropped; 0: no limit."""
    val_fraction: float = 0.1
    """Expected share of documents in the val split (chosen per document by a seeded hash)."""
    shards: int = 1
    """Train shards (one per training rank); val is always one shard."""
    seed: int = 0


def parse_doc_spec(text: str) -> DocSpec:
    unit, sep, field = text.partition(":")
    if unit in DOC_UNITS and not sep:
        return DocSpec(unit)
    if unit in ("jsonl", "parquet") and field:
        return DocSpec(unit, field)
    raise JobInputError(f"--docs {text!r}: expected file, paragraph, line, jsonl:FIELD or parquet:COLUMN")


def parse_tokenizer_spec(text: str) -> TokenizerSpec:
    kind, sep, vocab = text.partition(":")
    if kind == "char" and not sep:
        return TokenizerSpec("char")
    if kind == "file" and vocab:
        return TokenizerSpec("file", path=_readable_tokenizer(text, vocab))
    if kind in ("words", "bpe") and vocab.isdigit() and int(vocab) > 0:
        size = int(vocab)
        if kind == "bpe" and size < BPE_MIN_VOCAB:
            raise JobInputError(
                f"--tokenizer {text}: a byte-level BPE needs at least {BPE_MIN_VOCAB} ids "
                "(256 bytes and the end-of-document token); pass bpe:V with a larger V"
            )
        return TokenizerSpec(kind, size)
    raise JobInputError(
        f"--tokenizer {text!r}: expected char, words:V or bpe:V (V a positive integer), or file:PATH "
        "(the tokenizer.json of an earlier corpus output)"
    )


def _readable_tokenizer(text: str, path: str) -> str:
    """The absolute path of a tokenizer that loads (so the job fails before Spark starts, not after)."""
    import os

    from contracts.tokenizer import TokenizerError, load_tokenizer

    try:
        load_tokenizer(path)
    except TokenizerError as exc:
        raise JobInputError(f"--tokenizer {text}: {exc}") from None
    return os.path.abspath(path)


def parse_dedup(text: str) -> tuple[str, ...]:
    if text == "none":
        return ()
    stages = tuple(s.strip() for s in text.split(","))
    if any(s not in DEDUP_STAGES for s in stages) or len(set(stages)) != len(stages):
        raise JobInputError(f"--dedup {text!r}: expected none, exact, minhash or exact,minhash")
    # Exact first: it is cheap and leaves fewer documents for MinHash.
    return tuple(s for s in DEDUP_STAGES if s in stages)


def validate(options: CorpusOptions) -> None:
    """Range checks that name the flag to change."""
    if options.word_split not in WORD_SPLITS:
        raise JobInputError(f"--word-split {options.word_split!r}: one of {', '.join(WORD_SPLITS)}")
    if not 0.0 <= options.val_fraction < 1.0:
        raise JobInputError(f"--val {options.val_fraction}: must be in [0, 1)")
    if options.shards < 1:
        raise JobInputError(f"--shards {options.shards}: must be at least 1")
    if options.min_chars < 0 or options.max_chars < 0:
        raise JobInputError("--min-chars and --max-chars must be >= 0")
    if options.max_chars and options.max_chars < options.min_chars:
        raise JobInputError(f"--max-chars {options.max_chars} is below --min-chars {options.min_chars}")
    mh = options.minhash
    if not 0.0 < mh.threshold <= 1.0:
        raise JobInputError(f"--minhash-threshold {mh.threshold}: must be in (0, 1]")
    if mh.ngram < 1 or mh.bands < 1 or mh.rows < 1:
        raise JobInputError("--minhash-ngram, --minhash-bands and --minhash-rows must be >= 1")
