"""Tokenizers against their one-line definitions (plain Python), with hypothesis for the edge cases."""

from __future__ import annotations

import re

from spark_jobs.wordcount.tokenizers import (
    cjk_tokens,
    get_tokenizer,
    strip_line_boms,
    whitespace_tokens,
    words_tokens,
)

# Whitespace that str.split() knows but a naive " "-split or ASCII \s would miss.
ODD_SPACE = " \t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2003\u2028\u202f\u3000"


def ref_whitespace(line: str) -> list[str]:
    return line.removeprefix("\ufeff").split()


def ref_words(line: str) -> list[str]:
    return re.findall(r"\w+", line.lower())


def _batch_counts(lines: list[bytes], tokenizer: str) -> tuple[dict, int]:
    import pyarrow as pa

    from spark_jobs.wordcount.combiner import BatchCounter

    counter = BatchCounter(tokenizer)
    # Two batches, as a task would see them; every value ends with "\n" like the engine sends it.
    half = len(lines) // 2
    for chunk in (lines[:half], lines[half:]):
        counter.add(pa.array([line + b"\n" for line in chunk], pa.binary()))
    batch = counter.result()
    pairs = dict(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True))
    return {w: c for w, c in pairs.items() if w is not None}, pairs[None]


def _ref_counts(lines: list[bytes], tokenizer: str) -> tuple[dict, int]:
    from collections import Counter

    counts: Counter[str] = Counter()
    bad = 0
    for raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            line = raw.decode("utf-8", errors="replace")
        tokens = ref_whitespace(line) if tokenizer == "whitespace" else ref_words(line.removeprefix("\ufeff"))
        counts.update(tokens)
    return dict(counts), bad


def test_examples_by_hand() -> None:
    assert whitespace_tokens("\ufeffHello,\u00a0World\u2003x\x1cy\x0bz\x0c") == [
        "Hello,",
        "World",
        "x",
        "y",
        "z",
    ]
    assert words_tokens("\ufeffHello, WORLD! it's x_y 42") == ["hello", "world", "it", "s", "x_y", "42"]
    assert cjk_tokens("我爱北京天安门。Hello, 世界!") == ["我", "爱", "北京", "天安门", "hello", "世界"]
    assert cjk_tokens("Café naïve") == ["café", "naïve"]
    # A BOM at the start of any line of a block goes; one inside a word stays (it is not a BOM there).
    assert strip_line_boms("\ufeffa\n\ufeffb c\ufeffd\r\ufeffe\r\n\ufeff") == "a\nb c\ufeffd\re\r\n"


def test_get_tokenizer_rejects_unknown() -> None:
    assert get_tokenizer("words") is words_tokens
    try:
        get_tokenizer("letters")
    except ValueError as exc:
        assert "letters" in str(exc)
    else:
        raise AssertionError("unknown tokenizer accepted")


def test_batch_counter_on_tricky_text() -> None:
    text = "ΟΔΟΣ Σίσυφος İstanbul straße ﬁne Ⅻ ²³ x_y ÉCOLE naïve 中文 \u00a0a\u2003b\x1cc\x85d"
    lines = [text.encode(), b"plain ascii Words, here!", "Ἀθῆναι ǅ ǈ".encode(), b"bad \xff", b"\x00\x00"]
    for tokenizer in ("whitespace", "words"):
        assert _batch_counts(lines, tokenizer) == _ref_counts(lines, tokenizer)


def test_vectorised_counts_every_non_ascii_separator() -> None:
    import sys
    from collections import Counter

    from spark_jobs.wordcount.block_count import count_block

    # Every character Python splits on, and a sample of non-word characters, between two words.
    spaces = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]
    text = "\n".join(f"a{c}b" for c in spaces + list("—“”…·§¶\u0301\u200b\ufffd"))
    for name, ref in (("whitespace", ref_whitespace), ("words", ref_words)):
        table = count_block(text, name)
        got = dict(zip(table["word"].to_pylist(), table["count"].to_pylist(), strict=True))
        assert got == dict(Counter(t for line in text.split("\n") for t in ref(line))), name
