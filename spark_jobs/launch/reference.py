"""Functions named by reference: ``"package.module:function"``, resolved where they run.

Stdlib only: the rank side resolves references (only the ranks import the training code), the
driver checks their form before it starts anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def split_reference(ref: str) -> tuple[str, str]:
    """``(module, attribute path)`` of a reference; ValueError when it has not that form."""
    module_name, sep, attr = ref.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"function reference {ref!r}: expected 'package.module:function'")
    return module_name, attr


def resolve_function(fn: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    """``fn`` itself, or the function a ``"package.module:function"`` string names (imported now)."""
    if callable(fn):
        return fn
    module_name, attr = split_reference(fn)
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"function reference {fn!r}: {type(target).__name__} is not callable")
    return target
