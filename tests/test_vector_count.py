"""The byte-level counting route of the word count's map side against plain-Python definitions."""

from __future__ import annotations

import re
import sys
from collections import Counter

import pytest

from spark_jobs.wordcount.block_count import count_block, count_utf8_block


def ref_counts(text: str, tokenizer: str) -> dict[str, int]:
    """Line by line, as the tokenizers are defined (BOM at a line start dropped first)."""
    counts: Counter[str] = Counter()
    for line in re.split(r"\r\n|\r|\n", text):
        line = line.removeprefix("\ufeff")
        counts.update(line.split() if tokenizer == "whitespace" else re.findall(r"\w+", line.lower()))
    return dict(counts)


def as_dict(table) -> dict[str, int]:
    return dict(zip(table["word"].to_pylist(), table["count"].to_pylist(), strict=True))


SEPARATORS = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()] + list(
    "—“”…·§¶\u0301\u200b\ufffd"
)
TEXTS = {
    "ascii": "The cat, the CAT and_the dog's 42 x\x1cy\x1fz\tq\x0bw\x0ce\r\nnew line\rold Mac\n",
    "every separator": "\n".join(f"a{c}b A{c}B" for c in SEPARATORS),
    "mixed scripts": "ΟΔΟΣ Σίσυφος İstanbul straße ﬁne Ⅻ ²³ ÉCOLE naïve 中文 Kelvin\u212a ǅ\u00a0x\u3000y\x85z\n",
    "bom at line starts": "\ufeffHello world\n\ufeffsecond\r\ufeffthird\r\nin\ufeffside \ufeff\n",
    "nul bytes": "a\x00b \x00\x00\n\x00",
    "empty lines": "\n\n \n\t\n",
}


@pytest.mark.parametrize("tokenizer", ["whitespace", "words"])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_bytes_route_equals_line_by_line_reference(name: str, tokenizer: str) -> None:
    text = TEXTS[name]
    table = count_utf8_block(text.encode("utf-8"), tokenizer)
    assert table is not None
    assert as_dict(table) == ref_counts(text, tokenizer)
    # The str route, used after a line-by-line decode, gives the same table.
    assert as_dict(count_block(text, tokenizer)) == ref_counts(text, tokenizer)


def test_invalid_utf8_is_left_to_the_caller() -> None:
    for tokenizer in ("whitespace", "words"):
        assert count_utf8_block(b"ok \xff bad\n", tokenizer) is None
        assert count_utf8_block("caf\u00e9 \xa0x\n".encode()[:-3] + b"\xc3", tokenizer) is None


def test_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ValueError, match="cjk"):
        count_utf8_block(b"a b\n", "cjk")
