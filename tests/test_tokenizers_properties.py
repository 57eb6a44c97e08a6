"""Tokenizers and line decoding against plain-Python references on generated edge cases (hypothesis)."""

from __future__ import annotations

import itertools
import re

import pytest
from test_tokenizers import ODD_SPACE, _batch_counts, _ref_counts, ref_whitespace, ref_words

from spark_jobs.wordcount.tokenizers import (
    cjk_tokens,
    decode_lines,
    whitespace_tokens,
    words_tokens,
)

hypothesis = pytest.importorskip("hypothesis")
given, settings, st = hypothesis.given, hypothesis.settings, hypothesis.strategies


ALPHABET = st.sampled_from(
    list(ODD_SPACE)
    + list("abcXYZ_09éÉßİΣσς²Ⅻ٣-.,;!?'\ufeff\u200b\u0301")
    + ["中", "国", "人", "你", "好", "😀"]
)


LINE = st.text(alphabet=ALPHABET, max_size=40)


LINES = st.lists(LINE, max_size=8)


@given(LINES)
@settings(max_examples=300, deadline=None)
def test_block_of_lines_equals_line_by_line(lines: list[str]) -> None:
    # The engines tokenize "\n"-joined blocks; that must equal tokenizing each line.
    block = "\n".join(lines)
    assert whitespace_tokens(block) == [t for line in lines for t in ref_whitespace(line)]
    assert words_tokens(block) == [t for line in lines for t in ref_words(line)]


@given(LINES)
@settings(max_examples=200, deadline=None)
def test_cjk_only_splits_words_further(lines: list[str]) -> None:
    block = "\n".join(lines)
    words = words_tokens(block)
    pieces = cjk_tokens(block)
    assert "".join(pieces) == "".join(words)
    assert all(re.fullmatch(r"\w+", p) for p in pieces)
    if not re.search("[\u4e00-\u9fff]", block):
        assert pieces == words


@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=6))
@settings(max_examples=300, deadline=None)
def test_decode_lines_counts_invalid_lines(lines: list[bytes]) -> None:
    expected_bad = 0
    expected: list[str] = []
    for raw in lines:
        try:
            expected.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            expected_bad += 1
            expected.append(raw.decode("utf-8", errors="replace"))
    text, bad = decode_lines(b"\n".join(lines))
    assert (text, bad) == ("\n".join(expected), expected_bad)


ENCODED_LINES = st.lists(
    st.one_of(
        LINE.map(lambda s: s.replace("\n", "").replace("\r", "").encode()),
        st.binary(max_size=10).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
        st.text(alphabet="abc ABC xyz_1!", max_size=20).map(str.encode),
    ),
    max_size=10,
)


@given(ENCODED_LINES, st.sampled_from(["whitespace", "words"]))
@settings(max_examples=300, deadline=None)
def test_batch_counter_equals_counter_reference(lines: list[bytes], tokenizer: str) -> None:
    assert _batch_counts(lines, tokenizer) == _ref_counts(lines, tokenizer)


@given(
    st.lists(st.sampled_from([b"", b"a", b"bc d", b"\r", b"\xef\xbb\xbfx", b"long " * 9]), max_size=30),
    st.lists(st.integers(min_value=1, max_value=200), max_size=6),
    st.integers(min_value=1, max_value=16),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_read_split_covers_every_line_once(tmp_path_factory, lines, cuts, chunk, trailing_newline) -> None:
    from spark_jobs.wordcount.inputs import read_split

    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = tmp_path_factory.mktemp("split") / "f.txt"
    path.write_bytes(data)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [
        block
        for start, end in itertools.pairwise(bounds)
        for block in read_split(str(path), start, end, chunk)
    ]
    assert b"".join(pieces) == data
    assert all(block.endswith(b"\n") for block in pieces[:-1])


@given(LINES)
@settings(max_examples=300, deadline=None)
def test_vectorised_block_counts_equal_line_by_line_counter(lines: list[str]) -> None:
    from collections import Counter

    from spark_jobs.wordcount.block_count import count_block

    block = "\n".join(lines)
    for name, ref in (("whitespace", ref_whitespace), ("words", ref_words)):
        table = count_block(block, name)
        got = dict(zip(table["word"].to_pylist(), table["count"].to_pylist(), strict=True))
        assert got == dict(Counter(t for line in lines for t in ref(line))), name
