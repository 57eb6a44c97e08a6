"""Collaborative training of GPT peers on the rank side: DiLoCo, FedAvg, codistillation, independent.

One replica (peer) per rank, each with its own model and its own AdamW, trained with batches of
``train.batch_size`` sequences (the batch of one model). What couples them is the mode
(``[collab] mode``):

- ``diloco`` / ``fedavg``: inner AdamW steps on every replica, then an outer step on shared
  parameters (:mod:`training.lm_collab_outer`);
- ``dml`` (codistillation) / ``independent``: peers of their own, pulled toward stale copies of
  the others or not at all, fused at the end (:mod:`training.lm_collab_peers`).

Every mode checkpoints at its evaluations and resumes exactly with ``run.resume``. The modules:

- :mod:`training.lm_collab_replica`: one replica's data, init, model and inner step;
- :mod:`training.lm_collab_run`: records, log lines, resume checks and result.json of a run;
- :mod:`training.lm_collab_outer`, :mod:`training.lm_collab_peers`: the two kinds of loop;
- this module: the entry points the launcher starts (``training.lm_collab:main``, ``main_many``).
"""

from __future__ import annotations

import time
from typing import Any

from training.dist import DistContext, distributed
from training.lm_collab_outer import run_outer
from training.lm_collab_peers import run_peers
from training.lm_config import OUTER_MODES, GPTConfig


def run_collab(cfg: GPTConfig, ctx: DistContext, t_enter: float | None = None) -> dict[str, Any]:
    """Run the ``[collab]`` mode of ``cfg`` inside an initialised process group; returns the result (all ranks)."""
    if cfg.collab is None:
        raise ValueError("[collab]: this runner needs a [collab] section (see conf/collab/gpt_diloco.toml)")
    t_enter = t_enter if t_enter is not None else time.time()
    if cfg.collab.mode in OUTER_MODES:
        return run_outer(cfg, ctx, t_enter)
    return run_peers(cfg, ctx, t_enter)


def main(cfg: GPTConfig) -> dict[str, Any]:
    """Rank entry point for the launcher: join the process group, run, leave."""
    t_enter = time.time()
    with distributed(cfg.launch.use_gpu, cfg.launch.collective_timeout_s) as ctx:
        return run_collab(cfg, ctx, t_enter)


def main_many(cfgs: list[GPTConfig]) -> list[dict[str, Any]]:
    """Several runs in a row in one process group (the comparison's arms); DDP arms go to lm_loop."""
    from training.lm_loop import run_training

    results = []
    with distributed(cfgs[0].launch.use_gpu, cfgs[0].launch.collective_timeout_s) as ctx:
        for cfg in cfgs:
            results.append(run_collab(cfg, ctx) if cfg.collab is not None else run_training(cfg, ctx))
    return results
