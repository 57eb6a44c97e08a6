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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.lm_config import GPTConfig


@dataclass
class ModelConfig:
    name: str = "mlp784"
    """Registered model name: mlp784 (the original article's 784-10-10 MLP), mlp (wider MLP), cnn (LeNet-style)."""
    hidden: int = 256
    """Hidden width of the wider ``mlp`` (its two hidden layers); mlp784 and cnn ignore it."""


@dataclass
class DataConfig:
    shards: str = "runs/shards/mnist5k"
    """Output directory of ``spark-collab shard`` (holds manifest.json)."""
    test: str = ""
    """Optional separate shards directory for the test accuracy (e.g. real MNIST t10k); empty: use ``shards``."""
    train_split: str = "train"
    """Split trained on; rank r reads shards r, r+W, ... (W = number of processes)."""
    val_split: str = "val"
    """Split for the per-epoch validation accuracy; skipped when the shards have no such split."""
    test_split: str = "test"
    """Split for the final test accuracy (in ``test`` when set, else in ``shards``); skipped when absent."""


@dataclass
class OptimConfig:
    name: str = "sgd"
    """Optimizer: sgd or adam."""
    lr: float = 0.01
    """Base learning rate."""
    momentum: float = 0.9
    """SGD momentum (sgd only)."""
    nesterov: bool = True
    """Nesterov momentum (sgd only)."""
    decay: float = 1e-6
    """Keras-style time decay per optimizer step: lr_t = lr / (1 + decay * step); 0 disables it."""
    schedule: str = "time"
    """Learning-rate schedule: time (the Keras time decay above) or cosine (lr -> 0 along a half cosine over all steps; decay ignored)."""
    weight_decay: float = 0.0
    """L2 weight decay passed to the optimizer."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas (adam only)."""


@dataclass
class TrainSection:
    epochs: int = 10
    """Number of passes over the training split."""
    batch_size: int = 128
    """Samples in one optimizer step of one model. Data-parallel training splits that batch over its
    W ranks (W must divide it); in collaborative training every peer or client is its own model and
    takes the whole batch on its rank."""
    strategy: str = "ddp"
    """Data-parallel strategy: ddp (DistributedDataParallel) or fsdp (FSDP2 fully_shard)."""
    seed: int = 0
    """Seed for model initialisation and the per-epoch shuffle (the same on every rank)."""
    bf16: bool = False
    """Run forward/loss under bf16 autocast (useful on GPU; parameters and optimizer stay float32)."""
    eval_batch_size: int = 1024
    """Per-rank batch size for validation and test evaluation."""
    max_steps_per_epoch: int = 0
    """Cap on optimizer steps per epoch (0 = no cap); for smoke tests and benchmarks."""


@dataclass
class LaunchConfig:
    num_processes: int | str = 2
    """Number of torch ranks TorchDistributor starts, or "auto" (train only): what Spark offers, i.e. the cores of local[N] / local[*], the task slots of the cluster's executors, or with use_gpu the GPUs Spark assigns."""
    local_mode: bool = True
    """True: ranks run on the driver machine (torchrun); False: one Spark barrier task per rank."""
    use_gpu: bool = False
    """Train on CUDA with NCCL (one GPU per rank); False: CPU with gloo."""
    timeout_s: int = 600
    """Wall-clock limit for the whole launch (every restart included)."""
    collective_timeout_s: int = 300
    """Process-group timeout: a collective (all-reduce, barrier) waiting longer than this fails its rank."""
    max_restarts: int = 0
    """When a rank dies or stalls, relaunch all ranks from the last complete checkpoint, at most this often."""
    stall_timeout_s: int = 300
    """A rank whose progress heartbeat is older than this is stalled: named with its stack, then killed or restarted (0: off)."""


@dataclass
class RunConfig:
    dir: str = "runs/train/default"
    """Run directory: result.json, metrics.jsonl, checkpoints, plots, launch/ (per-rank status)."""
    resume: bool = False
    """Continue from the checkpoint in ``dir`` when there is one (otherwise start fresh)."""
    checkpoint: bool = True
    """Write a checkpoint at the end of every epoch (main rank, atomic, with a SHA-256 record)."""
    checkpoint_every: int = 0
    """Also write a checkpoint every this many optimizer steps (0: at epoch ends only); collab: every this many rounds (DML: epochs), 0 or 1 every round."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep in checkpoints/ (a corrupt latest one falls back to the one before)."""
    plots: bool = True
    """Write loss/accuracy curves as PNG at the end."""
    tracking: str = "none"
    """Experiment tracking: none, or mlflow (the main rank logs params, metrics, plots, result and model to MLFLOW_TRACKING_URI, default ./mlruns; needs the tracking extra)."""


@dataclass
class FaultConfig:
    fail_rank: int = -1
    """Fault injection: the global rank that fails (-1: off)."""
    fail_at_step: int = -1
    """Fault injection: global optimizer step (0-based, counted across epochs) at which it fails."""
    mode: str = "raise"
    """How it fails: raise (an exception), exit (os._exit(1)), kill (SIGKILL to itself) or stall (sleeps forever)."""
    attempts: int = 1
    """In how many attempts of a restarting launch the fault fires (1: the first only, so a restart gets past it)."""


@dataclass
class CollabConfig:
    mode: str = "dml"
    """Collaborative mode: dml (deep mutual learning), fedavg (federated averaging), local_sgd."""
    peers: list[str] = field(default_factory=list)
    """Model names of the peers (one per rank, cycled); empty: every rank uses [model].name."""
    weight: float = 1.0
    """DML: weight of the mutual (KL) term against the cross-entropy term."""
    temperature: float = 1.0
    """DML: softmax temperature for the mutual term."""
    rounds: int = 10
    """FedAvg / local SGD: communication rounds."""
    local_epochs: int = 1
    """FedAvg / local SGD: local epochs between averaging rounds."""
    fraction: float = 1.0
    """FedAvg: fraction of clients taking part in each round."""
    mu: float = 0.0
    """FedProx proximal term weight (0 = plain FedAvg)."""
    fusion: str = "ensemble"
    """DML: how peers are fused at the end: ensemble (average probabilities), average (average parameters; needs same_init), none."""
    target_accuracy: float = 0.0
    """Report the first round (fedavg/local_sgd) or epoch (dml) whose fused test accuracy reaches this (0 = not tracked)."""
    same_init: bool = False
    """DML: start every peer from the same initialisation (needed for fusion = "average"); false: peer r uses seed + 1000 r."""
    sync_steps: int = 0
    """local_sgd: average the models every this many local optimizer steps (0: after every local_epochs epochs)."""


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """[model] section."""
    data: DataConfig = field(default_factory=DataConfig)
    """[data] section."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """[optim] section."""
    train: TrainSection = field(default_factory=TrainSection)
    """[train] section."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """[launch] section."""
    run: RunConfig = field(default_factory=RunConfig)
    """[run] section."""
    fault: FaultConfig = field(default_factory=FaultConfig)
    """[fault] section."""
    collab: CollabConfig | None = None
    """[collab] section; present only in collaborative configs."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML friendly); ``collab`` left out when absent."""
        out = dataclasses.asdict(self)
        if out["collab"] is None:
            del out["collab"]
        return out


# Section name -> dataclass; the one place that lists them.
SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)
}
SECTIONS["collab"] = CollabConfig
STRATEGIES = ("ddp", "fsdp")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("time", "cosine")
TRACKERS = ("none", "mlflow")
COLLAB_MODES = ("dml", "fedavg", "local_sgd")
COLLAB_UNREAD_KEYS = (
    "train.strategy",
    "train.bf16",
    "data.val_split",
    "run.plots",
)
FUSIONS = ("ensemble", "average", "none")
AUTO = "auto"  # launch.num_processes: resolved by the driver from what Spark offers
FAULT_MODES = ("raise", "exit", "kill", "stall")
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


def validate(cfg: Any) -> Any:
    """Range and choice checks across fields; raises ValueError naming the key and the fix."""
    if not isinstance(cfg, TrainConfig):
        return cfg.validate()  # a root of its own (CONFIG_ROOTS) checks itself
    from training.models import available_models, unknown_model_message

    def bad(key: str, msg: str) -> None:
        raise ValueError(f"{key}: {msg}")

    if cfg.model.name not in available_models():
        bad("model.name", unknown_model_message(cfg.model.name))
    if cfg.model.hidden < 1:
        bad("model.hidden", "must be >= 1")
    if not cfg.data.shards:
        bad("data.shards", "set it to the output directory of `spark-collab shard`")
    if cfg.optim.name not in OPTIMIZERS:
        bad("optim.name", f"unknown optimizer {cfg.optim.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if cfg.optim.lr <= 0:
        bad("optim.lr", "must be > 0")
    if cfg.optim.decay < 0:
        bad("optim.decay", "must be >= 0")
    if cfg.optim.schedule not in SCHEDULES:
        bad(
            "optim.schedule",
            f"unknown schedule {cfg.optim.schedule!r}; choose one of: {', '.join(SCHEDULES)}",
        )
    if cfg.optim.schedule == "cosine" and cfg.collab is not None:
        bad("optim.schedule", "cosine is for `spark-collab train`; collaborative runs use time")
    if not 0 <= cfg.optim.momentum < 1:
        bad("optim.momentum", "must be in [0, 1)")
    if cfg.optim.nesterov and cfg.optim.name == "sgd" and cfg.optim.momentum == 0:
        bad("optim.nesterov", "Nesterov needs optim.momentum > 0; set optim.nesterov=false")
    if len(cfg.optim.betas) != 2:
        bad("optim.betas", "expected two numbers, e.g. [0.9, 0.999]")
    if cfg.train.epochs < 1:
        bad("train.epochs", "must be >= 1")
    if cfg.train.strategy not in STRATEGIES:
        bad(
            "train.strategy",
            f"unknown strategy {cfg.train.strategy!r}; choose one of: {', '.join(STRATEGIES)}",
        )
    if cfg.train.eval_batch_size < 1:
        bad("train.eval_batch_size", "must be >= 1")
    if cfg.train.max_steps_per_epoch < 0:
        bad("train.max_steps_per_epoch", "must be >= 0 (0 = no cap)")
    auto = cfg.launch.num_processes == AUTO
    if isinstance(cfg.launch.num_processes, str) and not auto:
        bad("launch.num_processes", f'expected a number >= 1 or "{AUTO}", got {cfg.launch.num_processes!r}')
    if auto and cfg.collab is not None:
        bad(
            "launch.num_processes",
            f'"{AUTO}" is for `spark-collab train`; set the number of peers/client groups',
        )
    if not auto and cfg.launch.num_processes < 1:  # type: ignore[operator]
        bad("launch.num_processes", "must be >= 1")
    # With "auto", the checks that need the number run again once the driver has resolved it.
    if cfg.train.batch_size < 1:
        bad("train.batch_size", "must be >= 1 (samples in one optimizer step of one model)")
    data_parallel = getattr(cfg, "collab", None) is None
    if data_parallel and not auto and cfg.train.batch_size % cfg.launch.num_processes:  # type: ignore[operator]
        bad(
            "train.batch_size",
            f"batch {cfg.train.batch_size} must be a multiple of launch.num_processes="
            f"{cfg.launch.num_processes} (each rank takes an equal share)",
        )
    if cfg.launch.timeout_s < 1:
        bad("launch.timeout_s", "must be >= 1 second")
    if cfg.launch.collective_timeout_s < 1:
        bad("launch.collective_timeout_s", "must be >= 1 second")
    if cfg.launch.max_restarts < 0:
        bad("launch.max_restarts", "must be >= 0")
    if cfg.launch.stall_timeout_s < 0:
        bad("launch.stall_timeout_s", "must be >= 0 seconds (0: no stall detection)")
    if cfg.run.checkpoint_every < 0:
        bad("run.checkpoint_every", "must be >= 0 steps (0: at epoch ends only)")
    if cfg.run.keep_checkpoints < 1:
        bad("run.keep_checkpoints", "must be >= 1")
    if cfg.fault.attempts < 0:
        bad("fault.attempts", "must be >= 0")
    if not cfg.run.dir:
        bad("run.dir", "set a run directory, e.g. runs/train/mlp784")
    if cfg.run.tracking not in TRACKERS:
        bad("run.tracking", f"unknown tracker {cfg.run.tracking!r}; choose one of: {', '.join(TRACKERS)}")
    if cfg.run.tracking == "mlflow" and importlib.util.find_spec("mlflow") is None:
        bad(
            "run.tracking",
            "mlflow is not installed: pip install 'spark-collab[tracking]' (or run.tracking=none)",
        )
    if cfg.fault.mode not in FAULT_MODES:
        bad("fault.mode", f"choose one of: {', '.join(FAULT_MODES)}")
    if not auto and cfg.fault.fail_rank >= cfg.launch.num_processes:  # type: ignore[operator]
        bad(
            "fault.fail_rank",
            f"rank {cfg.fault.fail_rank} does not exist with {cfg.launch.num_processes} processes",
        )
    if cfg.collab is not None:
        check_no_unread_keys(cfg)
        c = cfg.collab
        if c.mode not in COLLAB_MODES:
            bad("collab.mode", f"unknown mode {c.mode!r}; choose one of: {', '.join(COLLAB_MODES)}")
        if c.fusion not in FUSIONS:
            bad("collab.fusion", f"unknown fusion {c.fusion!r}; choose one of: {', '.join(FUSIONS)}")
        for i, peer in enumerate(c.peers):
            if peer not in available_models():
                bad(f"collab.peers[{i}]", unknown_model_message(peer))
        if not 0 < c.fraction <= 1:
            bad("collab.fraction", "must be in (0, 1]")
        if c.temperature <= 0:
            bad("collab.temperature", "must be > 0")
        if c.rounds < 1:
            bad("collab.rounds", "must be >= 1")
        if c.local_epochs < 1:
            bad("collab.local_epochs", "must be >= 1")
        if c.mu < 0:
            bad("collab.mu", "must be >= 0")
    return cfg


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


def unread_keys(cfg: Any) -> tuple[str, ...]:
    """Keys of the shared sections that ``cfg``'s job does not read (hidden by describe, refused when
    set): collaborative training trains every peer plainly in float32 on one rank, evaluates on the
    test split only and always draws its plots (it checkpoints per round or epoch, not per step)."""
    return COLLAB_UNREAD_KEYS if getattr(cfg, "collab", None) is not None else ()


def check_no_unread_keys(cfg: Any) -> None:
    """ValueError for a non-default value of a key the job accepts (the format is shared) but does
    not read: a setting that silently does nothing is worse than an error."""
    defaults = type(cfg)()
    for key in unread_keys(cfg):
        section, _, name = key.partition(".")
        value, default = getattr(getattr(cfg, section), name), getattr(getattr(defaults, section), name)
        if value != default:
            raise ValueError(
                f"{key}={value!r}: collaborative training does not use this key; remove it from the config "
                f"(or set it back to {default!r})"
            )


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
