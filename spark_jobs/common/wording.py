"""Small helpers for the words of user-facing lines."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 shard``, ``2 shards``, ``0 shards``: the count with the noun in the right number."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"
