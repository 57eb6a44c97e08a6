"""Range and choice checks of the classifier config root (:class:`TrainConfig`), run by
:func:`training.config.load_config` on the driver and again on every rank.

The sections that every root shares (``[launch]``, ``[run]``, ``[fault]``) are checked by
:mod:`training.shared_checks`; a root of its own (``CONFIG_ROOTS``) checks itself in ``validate()``.
"""

from __future__ import annotations

from typing import Any

from training.config_sections import (
    AUTO,
    COLLAB_MODES,
    COLLAB_UNREAD_KEYS,
    FUSIONS,
    OPTIMIZERS,
    SCHEDULES,
    STRATEGIES,
    TrainConfig,
)
from training.shared_checks import check_fault, check_launch, check_run


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
    collaborative = cfg.collab is not None
    check_launch(cfg.launch, collaborative=collaborative)
    # With "auto", the checks that need the number run again once the driver has resolved it.
    auto = cfg.launch.num_processes == AUTO
    if cfg.train.batch_size < 1:
        bad("train.batch_size", "must be >= 1 (samples in one optimizer step of one model)")
    if not collaborative and not auto and cfg.train.batch_size % cfg.launch.num_processes:  # type: ignore[operator]
        bad(
            "train.batch_size",
            f"batch {cfg.train.batch_size} must be a multiple of launch.num_processes="
            f"{cfg.launch.num_processes} (each rank takes an equal share)",
        )
    check_run(
        cfg.run,
        step_unit="rounds" if collaborative else "steps",
        checkpoints_at="the last round" if collaborative else "epoch ends",
        dir_example="runs/train/mlp784",
    )
    check_fault(cfg.fault, cfg.launch.num_processes)
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
