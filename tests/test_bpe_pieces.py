"""Piece-by-piece byte-level BPE (contracts.bpe_pieces) against the ``tokenizers`` library itself."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import bpe_pieces
from contracts.bpe_pieces import GPT2_PATTERN, byte_level, piece_encoder, unsure_among
from contracts.tokenizer import EOT, BpeTokenizer

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "It's 12:30 — they'll say we'd've 3½ ²³ Ⅻ naïve café; 中文分词，《红楼梦》。 😀👍🏽\n"
    "tabs\tand  double  spaces\r\n trailing   \n\u00a0nbsp\u2003em\u3000ideo\x1cfs\x85nel\ufeffbom\n"
) * 20
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
U16, U32 = np.dtype("<u2"), np.dtype("<u4")


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    return BpeTokenizer.train(iter([SAMPLE.splitlines(keepends=True)]), 400)


def library_bytes(bpe: BpeTokenizer, texts: list[str], dtype: np.dtype) -> list[bytes]:
    """The library's own encode, one text at a time: the reference."""
    return [
        np.asarray(bpe.backend.encode(t, add_special_tokens=False).ids, dtype=dtype).tobytes() for t in texts
    ]


def test_texts_the_pieces_take_are_cut_as_the_library_cuts_them(bpe: BpeTokenizer) -> None:
    """Each code point of the first two planes but the surrogates, next to a letter, a digit,
    punctuation, a space and a newline, one text each. Those the encoder takes (the others go
    through the library) are cut into the library's pieces, mapped to its characters, and get its
    ids."""
    encoder = piece_encoder(bpe.backend, U16)
    assert encoder is not None
    texts = [f"a{chr(c)}1!{chr(c)} {chr(c)}\n" for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF]
    taken = [t for t, unsure in zip(texts, encoder.unsure_texts(texts), strict=True) if not unsure]
    for text in taken:
        ours = [byte_level(p) for p in encoder.pattern.findall(text)]
        assert ours == [p for p, _ in bpe.backend.pre_tokenizer.pre_tokenize_str(text)], ascii(text)
    assert bpe.encode_batch_bytes(texts, U16) == library_bytes(bpe, texts, U16)


def test_the_probe_names_the_code_points_cut_differently(bpe: BpeTokenizer) -> None:
    import regex

    pattern = regex.compile(GPT2_PATTERN)
    points = list(range(0x500, 0x600))
    unsure = set(unsure_among(points, pattern, bpe.backend.pre_tokenizer))
    for c in points:
        text = f"a{chr(c)}1!{chr(c)} {chr(c)}\n"
        ours = [byte_level(p) for p in pattern.findall(text)]
        theirs = [p for p, _ in bpe.backend.pre_tokenizer.pre_tokenize_str(text)]
        assert (ours != theirs) == (c in unsure), f"U+{c:04X}"


@pytest.mark.parametrize("dtype", [U16, U32])
def test_ids_are_the_librarys_on_mixed_text(bpe: BpeTokenizer, dtype: np.dtype) -> None:
    texts = [*SAMPLE.splitlines(keepends=True)[:8], SAMPLE, "", " ", "\n\n", "中文" * 300]
    assert bpe.encode_batch_bytes(texts, dtype) == library_bytes(bpe, texts, dtype)
    assert bpe._piece_encoders[dtype.str] is not None  # the piece path ran, not the fallback


@settings(max_examples=80, deadline=None)
@given(st.lists(TEXT, max_size=6))
def test_ids_are_the_librarys_on_any_text(bpe: BpeTokenizer, texts: list[str]) -> None:
    assert bpe.encode_batch_bytes(texts, U16) == library_bytes(bpe, texts, U16)


def test_texts_holding_the_end_of_document_text_are_encoded_as_plain_text(bpe: BpeTokenizer) -> None:
    texts = ["plain one", f"quoting {EOT} inside", "plain two"]
    encoded = bpe.encode_batch_bytes(texts, U32)
    assert encoded == [np.asarray(bpe.encode(t), U32).tobytes() for t in texts]
    assert bpe.eot_id not in np.frombuffer(encoded[1], U32)


def test_the_memory_starts_over_when_full_and_the_ids_stay_the_same(
    bpe: BpeTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bpe_pieces, "MAX_PIECES", 10)
    encoder = piece_encoder(bpe.backend, U16)
    assert encoder is not None
    texts = SAMPLE.splitlines(keepends=True)[:12]
    for text in texts:  # one at a time, so the memory fills and is cleared several times
        assert encoder.encode_bytes([text]) == library_bytes(bpe, [text], U16)
    assert len(encoder.known) <= max(10, max(len(set(encoder.pattern.findall(t))) for t in texts))


def test_other_pipelines_go_through_the_library(bpe: BpeTokenizer) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    prefixed = BpeTokenizer.from_json(bpe.to_json())
    prefixed.backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert piece_encoder(prefixed.backend, U16) is None
    normalized = BpeTokenizer.from_json(bpe.to_json())
    normalized.backend.normalizer = tokenizers.normalizers.Lowercase()
    assert piece_encoder(normalized.backend, U16) is None
    for tok in (prefixed, normalized):
        texts = ["Hello World", "中文 12"]
        assert tok.encode_batch_bytes(texts, U16) == library_bytes(tok, texts, U16)


def test_training_from_piece_counts_gives_the_tokenizer_training_on_the_texts_gives() -> None:
    """Counted in two parts and summed, as partitions are; texts with the end-of-document text, with
    code points the piece pattern and the library may classify differently (letters of recent
    Unicode versions), and with every kind of whitespace."""
    recent = "".join(map(chr, [0x0558, 0x088F, 0x0C5C, 0x1E4D0, 0x1E4D1, 0x10D40, 0x11F00]))
    texts = [*SAMPLE.splitlines(keepends=True), f"quoting {EOT} here", f"new letters {recent} {recent}x"] * 3
    parts = [bpe_pieces.PieceCounter(), bpe_pieces.PieceCounter()]
    parts[0].add(texts[: len(texts) // 2])
    parts[1].add(texts[len(texts) // 2 :])
    counts = parts[0].counts() + parts[1].counts()
    for vocab in (300, 420):
        direct = BpeTokenizer.train(iter([texts]), vocab)
        from_counts = BpeTokenizer.train_from_counts(sorted(counts.items()), vocab)
        assert from_counts.to_json() == direct.to_json()


def test_repeated_words_give_the_counts_back() -> None:
    counts = {"Ġthe": 70_000, "a": 1, "ä¸Ńæĸĩ": 3, "x" * 70_000: 2}
    seen: dict[str, int] = {}
    for text in bpe_pieces.repeated_words(counts.items()):
        assert len(text) <= 2 * 70_001
        for word in text.split():
            seen[word] = seen.get(word, 0) + 1
    assert seen == counts


def test_real_books_encode_and_train_as_the_library_does(shared_data) -> None:
    """The shared English books (BOM, CRLF) and Chinese classics, kept as they are on disk, one
    document per paragraph: trained from piece counts and on the texts, then encoded both ways."""
    texts: list[str] = []
    for path in sorted(shared_data.glob("*/*.txt")):
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            texts += [p for p in re.split(r"(?:\r?\n){2,}", f.read()) if p]
    counter = bpe_pieces.PieceCounter()
    counter.add(texts)
    direct = BpeTokenizer.train(iter([texts]), 2000)
    assert BpeTokenizer.train_from_counts(counter.counts().items(), 2000).to_json() == direct.to_json()
    assert direct.encode_batch_bytes(texts, U16) == library_bytes(direct, texts, U16)
