"""Tokenizers for the word count: exact, documented, and usable on one line or a block of lines.

The splitting itself is defined in :mod:`contracts.wordsplit`; this module adds line decoding.
Everything here runs in Spark's Python workers (called by the map side of every engine, and by the
corpus job's readers); the driver only checks tokenizer names against :data:`TOKENIZERS`.

The definitions (``whitespace``, ``words``, ``cjk``, and the byte-order mark dropped at the start
of a line) are in :mod:`contracts.wordsplit`. Each treats ``\\n`` as a separator, so tokenizing a
block of lines joined with ``\\n`` gives exactly the tokens of the lines one by one; the Spark
engines rely on that to tokenize thousands of lines per Python call instead of one.
"""

from __future__ import annotations

import re

# The splitters live in contracts.wordsplit so that code without pyspark (the rank side, text
# generation) splits words exactly as the word count does; they are re-exported here unchanged.
from contracts.wordsplit import (
    BOM,
    TOKENIZERS,
    cjk_tokens,
    get_tokenizer,
    strip_line_boms,
    whitespace_tokens,
    words_tokens,
)

__all__ = [
    "BOM",
    "TOKENIZERS",
    "cjk_tokens",
    "decode_lines",
    "get_tokenizer",
    "strip_line_boms",
    "whitespace_tokens",
    "words_tokens",
]

_LINE_END = re.compile(rb"\r\n|\r|\n")


def decode_lines(blob: bytes) -> tuple[str, int]:
    """Decode UTF-8 lines; return the text and how many lines had invalid bytes.

    Invalid sequences become U+FFFD (Python's ``errors="replace"``). The strict decode of the whole
    block is the fast path: almost all input is valid, and only a failing block is re-decoded line by line.
    """
    try:
        return blob.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    bad = 0
    parts: list[str] = []
    # Lines as Spark's text reader cuts them: LF, CRLF or a lone CR.
    for raw in _LINE_END.split(blob):
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad += 1
            parts.append(raw.decode("utf-8", errors="replace"))
    return "\n".join(parts), bad
