"""Training configuration: TOML sections mapped onto dataclasses, ``--set`` overrides last.

One typed chain, in this order: dataclass defaults, the TOML file, then ``--set section.key=value``
overrides. Unknown sections or keys and wrong value types raise :class:`ValueError` naming the key
(the CLI turns that into a one-line ``error:``). Every field carries a docstring (the string right
below it); :func:`describe` prints them.

The config object is a plain tree of dataclasses, so it pickles and can be handed to
TorchDistributor as the one argument of a rank function.

Sections::

    [model] [data] [optim] [train] [launch] [run] [fault]   always present (defaults)
    [collab]                                                 optional, collaborative training only

The loader builds any root dataclass whose fields are sections: :class:`TrainConfig` for the
classifiers, and the root named in :data:`CONFIG_ROOTS` for a model with its own keys (``model.name
= "gpt"`` reads :class:`training.lm_config.GPTConfig`). Such a root checks itself in ``validate()``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import textwrap
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config_checks import check_no_unread_keys, unread_keys, validate
from training.config_sections import (
    AUTO,
    COLLAB_MODES,
    COLLAB_UNREAD_KEYS,
    FAULT_MODES,
    FUSIONS,
    OPTIMIZERS,
    SCHEDULES,
    SECTIONS,
    STRATEGIES,
    TRACKERS,
    CollabConfig,
    DataConfig,
    FaultConfig,
    LaunchConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    TrainSection,
)

if TYPE_CHECKING:
    from training.lm_config import GPTConfig

# The sections, the classifier root and its checks are importable from here, the config's one door.
__all__ = [
    "AUTO", "COLLAB_MODES", "COLLAB_UNREAD_KEYS", "CONFIG_ROOTS", "FAULT_MODES", "FUSIONS", "OPTIMIZERS",
    "SCHEDULES", "SECTIONS", "STRATEGIES", "TRACKERS", "CollabConfig", "DataConfig", "FaultConfig",
    "LaunchConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "TrainSection",
    "apply_overrides", "check_no_unread_keys", "config_from_argv", "config_from_dict", "describe",
    "field_docs", "load_config", "parse_override", "root_for", "sections_of", "unread_keys", "validate",
]  # fmt: skip


# Models whose config is a root of its own (model.name -> "module:class"); the rest use TrainConfig.
CONFIG_ROOTS: dict[str, str] = {"gpt": "training.lm_config:GPTConfig"}


def root_for(model_name: str | None) -> type:
    """The config root that ``model.name = model_name`` reads (TrainConfig unless listed in CONFIG_ROOTS)."""
    if model_name not in CONFIG_ROOTS:
        return TrainConfig
    module, _, cls = CONFIG_ROOTS[model_name].partition(":")
    return getattr(importlib.import_module(module), cls)


def sections_of(root: type) -> dict[str, type]:
    """Section name -> dataclass of a config root."""
    if root is TrainConfig:
        return SECTIONS
    hints = typing.get_type_hints(root)
    return {f.name: _strip_optional(hints[f.name])[0] for f in dataclasses.fields(root)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotated type; ints widen to float; nothing else converts."""
    tp, optional = _strip_optional(tp)
    if value is None and optional:
        return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        # e.g. ``int | str`` (a count or "auto"): the first member type that takes the value, unconverted.
        members = typing.get_args(tp)
        for member in members:
            try:
                return _coerce(key, value, member)
            except ValueError:
                continue
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise ValueError(f"{key}: expected {names}, got {value!r}")
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list of {item_tp.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported field type {tp!r}")  # a bug in this module, not user input


def _build_section(name: str, values: Mapping[str, Any], base: Any | None = None) -> Any:
    cls = type(base) if base is not None else SECTIONS[name]
    if not isinstance(values, Mapping):
        raise ValueError(f"[{name}]: expected a table of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{name}.{key}: unknown key; known keys in [{name}]: {', '.join(sorted(known))}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    current = base if base is not None else cls()
    return dataclasses.replace(current, **kwargs)


def config_from_dict(data: Mapping[str, Any], base: Any | None = None) -> Any:
    """Build a config from nested dicts (parsed TOML), on top of ``base`` or TrainConfig's defaults."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    sections = sections_of(type(cfg))
    for section, values in data.items():
        if section not in sections:
            raise ValueError(f"[{section}]: unknown section; known sections: {', '.join(sections)}")
        current = getattr(cfg, section)
        base_section = current if current is not None else sections[section]()
        setattr(cfg, section, _build_section(section, values, base_section))
    return cfg


def _parse_value(raw: str) -> Any:
    """A ``--set`` value: a TOML literal (1, 0.5, true, "x", [1, 2]) or else the bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_override(item: str, sections: Mapping[str, type] = SECTIONS) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value converted to the field's type in ``sections``)."""
    lhs, sep, raw = item.partition("=")
    section, dot, key = lhs.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ValueError(f"--set {item!r}: expected section.key=value, e.g. --set train.epochs=3")
    if section not in sections:
        raise ValueError(f"--set {lhs}: unknown section {section!r}; known sections: {', '.join(sections)}")
    cls = sections[section]
    hints = typing.get_type_hints(cls)
    if key not in hints:
        known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
        raise ValueError(f"--set {lhs}: unknown key; known keys in [{section}]: {known}")
    raw = raw.strip()
    value = _parse_value(raw)
    target, _ = _strip_optional(hints[key])
    if target is str and not isinstance(value, str):
        value = raw  # run.dir=123 or model.name=cnn2 are strings, whatever TOML thinks
    elif typing.get_origin(target) is list and isinstance(value, str):
        # Convenience: --set collab.peers=mlp,cnn
        value = [_parse_value(v.strip()) for v in raw.split(",") if v.strip()]
    return section, key, value


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``--set section.key=value`` items in order (later wins)."""
    grouped: dict[str, dict[str, Any]] = {}
    sections = sections_of(type(cfg))
    for item in overrides:
        section, key, value = parse_override(item, sections)
        grouped.setdefault(section, {})[key] = value
    return config_from_dict(grouped, cfg)


def _model_name(data: Mapping[str, Any], overrides: Iterable[str]) -> str | None:
    """``model.name`` as the file and the overrides set it (the last override wins); None when unset."""
    model = data.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    for item in overrides:
        lhs, _, raw = item.partition("=")
        if lhs.strip() == "model.name":
            value = _parse_value(raw.strip())
            name = value if isinstance(value, str) else raw.strip()
    return name if isinstance(name, str) else None


def load_config(
    path: str | Path | None, overrides: Iterable[str] = (), *, check: bool = True
) -> TrainConfig | GPTConfig:
    """Defaults, then the TOML file at ``path`` (None: defaults only), then ``overrides``; validated.

    The root is chosen by ``model.name`` (see :data:`CONFIG_ROOTS`). Raises ValueError (naming the
    key or the file) for anything wrong.
    """
    overrides = list(overrides)
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"--config {p}: file not found")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"--config {p}: invalid TOML: {exc}") from None
    cfg = config_from_dict(data, root_for(_model_name(data, overrides))())
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg) if check else cfg


def config_from_argv(prog: str, description: str | None, argv: Sequence[str] | None) -> Any | None:
    """``--config X.toml [--set k=v ...]`` of a rank-side ``python -m training.X`` entry (no Spark).

    Returns the validated config, or None after printing the one ``error:`` line.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="training config (TOML)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (read from the source)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value
    return docs


def describe(cfg: Any | None = None) -> str:
    """Every section and key of ``cfg``'s root with its current value and docstring (for ``--describe``)."""
    cfg = cfg or TrainConfig(collab=CollabConfig())
    lines: list[str] = []
    hidden = set(unread_keys(cfg))
    for name, cls in sections_of(type(cfg)).items():
        section = getattr(cfg, name)
        if section is None:
            continue  # an optional section this job does not have ([collab] in a train config)
        lines.append(f"[{name}]")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f"{name}.{f.name}" in hidden:
                continue
            lines.append(f"  {f.name} = {getattr(section, f.name)!r}")
            lines.append(f"      {docs.get(f.name, '')}")
    return "\n".join(lines)
