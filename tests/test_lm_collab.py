"""Collaborative GPT runs in one process: config, peer KL, replica data, counting on one rank.

The two-rank checks against hand references are in test_lm_collab_dist.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gpt_shards import char_shards, gpt_overrides

from training.config import load_config


def _cfg(shards: Path, run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(None, gpt_overrides(shards, run_dir, *extra))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("collab.mode='gossip'", "collab.mode"),
        ("collab.inner_steps=0", "collab.inner_steps"),
        ("collab.outer_momentum=1.0", "collab.outer_momentum"),
        ("collab.exchange_every=0", "collab.exchange_every"),
        ("collab.partition='random'", "collab.partition"),
        ("collab.fusion='average'", "collab.fusion"),  # peers with different inits
    ],
)
def test_bad_collab_keys_are_named(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, gpt_overrides(tmp_path, tmp_path / "run", "collab.mode='dml'", override))


def test_a_replica_batch_need_not_split_over_the_ranks(tmp_path: Path) -> None:
    """train.batch_size is one model's: data-parallel ranks share it, collaborative replicas each take it."""
    batch = ("launch.num_processes=2", "train.batch_size=3")
    cfg = load_config(None, gpt_overrides(tmp_path, tmp_path / "r", *batch, "collab.mode='dml'"))
    assert (cfg.rank_batch(), cfg.micro_batch()) == (3, 3)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"train\.micro_batch"):
        load_config(
            None, gpt_overrides(tmp_path, tmp_path / "r", *batch, "collab.mode='dml'", "train.micro_batch=2")
        )
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        load_config(None, gpt_overrides(tmp_path, tmp_path / "r", *batch))  # data-parallel


def test_shared_sections_are_checked_as_in_the_classifier_config(tmp_path: Path) -> None:
    auto = "launch.num_processes='auto'"
    with pytest.raises(ValueError, match=r"launch\.num_processes.*auto"):
        load_config(None, gpt_overrides(tmp_path, tmp_path / "r", auto, "collab.mode='dml'"))
    with pytest.raises(ValueError, match=r"run\.tracking"):
        load_config(None, gpt_overrides(tmp_path, tmp_path / "r", "run.tracking='wandb'"))
    with pytest.raises(ValueError, match=r"fault\.fail_rank"):
        load_config(None, gpt_overrides(tmp_path, tmp_path / "r", "fault.fail_rank=1"))
    # "auto" is resolved by the data-parallel driver, and every fault mode of the launcher applies.
    cfg = load_config(None, gpt_overrides(tmp_path, tmp_path / "r", auto, "fault.mode='stall'"))
    assert cfg.launch.num_processes == "auto"


def test_average_fusion_is_accepted_with_a_shared_init(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        gpt_overrides(
            tmp_path, tmp_path / "r", "collab.mode='dml'", "collab.fusion='average'", "collab.same_init=true"
        ),
    )
    assert cfg.collab.fusion == "average"  # type: ignore[union-attr]


def test_fedavg_is_outer_sgd_at_lr_one_without_momentum(tmp_path: Path) -> None:
    from training.lm_collab_outer import outer_hyperparameters

    cfg = load_config(
        None, gpt_overrides(tmp_path, tmp_path / "r", "collab.mode='fedavg'", "collab.outer_lr=0.3")
    )
    assert outer_hyperparameters(cfg.collab) == (1.0, 0.0, False)  # type: ignore[arg-type]
    cfg = load_config(None, gpt_overrides(tmp_path, tmp_path / "r", "collab.mode='diloco'"))
    assert outer_hyperparameters(cfg.collab) == (0.7, 0.9, True)  # type: ignore[arg-type]


def test_mean_pair_kl_equals_the_loop_over_pairs() -> None:
    from training.lm_collab_peers import mean_pair_kl

    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(3, 2, 4, 7, dtype=torch.float64), dim=-1)
    expected = torch.zeros(2, 4, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            if i != j:
                expected += (logp[i].exp() * (logp[i] - logp[j])).sum(dim=-1) / 6
    torch.testing.assert_close(mean_pair_kl(logp), expected)
    assert torch.equal(mean_pair_kl(logp[:1]), torch.zeros(2, 4, dtype=torch.float64))
    same = torch.stack([logp[0], logp[0]])
    torch.testing.assert_close(mean_pair_kl(same), torch.zeros(2, 4, dtype=torch.float64))


def test_shards_partition_gives_each_replica_its_own_shards(tmp_path: Path) -> None:
    from contracts.manifest import Manifest
    from contracts.tokens import open_token_shard
    from training.lm_collab_replica import replica_windows

    shards = char_shards(tmp_path / "shards", train_shards=2)
    cfg = _cfg(shards, tmp_path / "r", "collab.partition='shards'")
    manifest = Manifest.read(shards, kind="tokens")
    for rank in range(2):
        windows = replica_windows(cfg, manifest, rank, 2)
        x, _ = windows.windows(np.array([0]))
        own = open_token_shard(shards, "train", rank, manifest=manifest).tokens
        assert x[0].tolist() == own[: cfg.model.block_size].tolist()
    with pytest.raises(ValueError, match=r"collab\.partition"):
        replica_windows(cfg, manifest, 2, 3)


def test_one_rank_sends_nothing() -> None:
    from training.comm import CommCounter, all_gather, all_reduce
    from training.dist import distributed

    with distributed():
        counter = CommCounter()
        t = torch.arange(5.0)
        assert torch.equal(all_reduce(t, counter), torch.arange(5.0))
        assert len(all_gather(t, counter)) == 1
    assert counter.bytes_sent == 0 and counter.calls == 0


def test_fedavg_of_one_replica_equals_plain_training(tmp_path: Path) -> None:
    """One replica averaged with nobody is plain AdamW training: the GPT loop of lm_loop is the reference."""
    from training.dist import distributed
    from training.lm_collab import run_collab
    from training.lm_loop import run_training

    shards = char_shards(tmp_path / "shards")
    with distributed() as ctx:
        run_training(_cfg(shards, tmp_path / "plain"), ctx)
        result = run_collab(
            _cfg(shards, tmp_path / "fedavg", "collab.mode='fedavg'", "collab.inner_steps=2"), ctx
        )
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    fedavg = torch.load(tmp_path / "fedavg" / "checkpoint.pt", map_location="cpu", weights_only=False)[
        "model"
    ]
    for k, v in plain.items():
        torch.testing.assert_close(fedavg[k], v, rtol=0, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    assert result["rounds"] == 3 and result["comm_bytes"] == 0
    lines = (tmp_path / "fedavg" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and all('"comm_bytes"' in line for line in lines)


@pytest.mark.parametrize("mode", ["dml", "independent"])
def test_peers_resume_from_a_mid_run_checkpoint_is_bitwise_exact(tmp_path: Path, mode: str) -> None:
    """One peer with dropout: model, AdamW, schedule and RNG come back exactly from the checkpoint at 3."""
    from training.checkpoint import load_model_state
    from training.dist import distributed
    from training.lm_collab import run_collab

    shards = char_shards(tmp_path / "shards")
    peers = (f"collab.mode='{mode}'", "model.dropout=0.1")
    with distributed() as ctx:
        whole = run_collab(_cfg(shards, tmp_path / "whole", *peers), ctx)
        run_collab(_cfg(shards, tmp_path / "resumed", *peers, "train.max_iters=3"), ctx)
        resumed = run_collab(_cfg(shards, tmp_path / "resumed", *peers, "run.resume=true"), ctx)
    assert resumed["resumed_from_iter"] == 3
    assert resumed["peer_val_losses"] == whole["peer_val_losses"]
    assert resumed["train_loss"] == whole["train_loss"]  # the log interval's sums came back too
    a, b = (
        load_model_state(tmp_path / "whole" / "checkpoint.pt"),
        load_model_state(tmp_path / "resumed" / "checkpoint.pt"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_mode(tmp_path: Path) -> None:
    from training.dist import distributed
    from training.lm_collab import run_collab

    shards = char_shards(tmp_path / "shards")
    with distributed() as ctx:
        run_collab(_cfg(shards, tmp_path / "r", "collab.mode='dml'", "train.max_iters=3"), ctx)
        with pytest.raises(ValueError, match=r"run\.resume: .* does not fit"):
            run_collab(_cfg(shards, tmp_path / "r", "collab.mode='fedavg'", "run.resume=true"), ctx)


@pytest.mark.parametrize(
    ("mode", "evaluations"),
    [("dml", "train.eval_interval=3"), ("diloco", "train.eval_interval=6")],  # diloco: outer steps at 2, 4, 6
)
def test_checkpoint_every_bounds_what_a_failure_loses(tmp_path: Path, mode: str, evaluations: str) -> None:
    """run.checkpoint_every 2: a failure at iteration 5 resumes from the checkpoint of iteration 4
    (not from an evaluation's, at 3 or none before 6), and the result is the uninterrupted one."""
    from training.checkpoint import load_model_state
    from training.dist import distributed
    from training.faults import InjectedFault
    from training.lm_collab import run_collab

    shards = char_shards(tmp_path / "shards")
    settings = (
        f"collab.mode='{mode}'",
        evaluations,
        "collab.inner_steps=2",
        "run.checkpoint_every=2",
        "run.keep_checkpoints=10",
    )
    with distributed() as ctx:
        whole = run_collab(_cfg(shards, tmp_path / "whole", *settings), ctx)
        with pytest.raises(InjectedFault):
            run_collab(
                _cfg(shards, tmp_path / "cut", *settings, "fault.fail_rank=0", "fault.fail_at_step=5"), ctx
            )
        resumed = run_collab(_cfg(shards, tmp_path / "cut", *settings, "run.resume=true"), ctx)
    assert resumed["resumed_from_iter"] == 4
    a, b = (
        load_model_state(tmp_path / "whole" / "checkpoint.pt"),
        load_model_state(tmp_path / "cut" / "checkpoint.pt"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_loss"] == whole["train_loss"]


@pytest.mark.parametrize("mode", ["diloco", "dml"])
def test_replicas_and_peers_warm_start_from_an_earlier_run(tmp_path: Path, mode: str) -> None:
    """Every replica or peer starts from the earlier run's model: its iteration-0 val loss is that run's last."""
    import json

    from training.dist import distributed
    from training.lm_collab import run_collab
    from training.lm_loop import run_training

    shards = char_shards(tmp_path / "shards")
    with distributed() as ctx:
        run_training(_cfg(shards, tmp_path / "first"), ctx)
        run_collab(
            _cfg(shards, tmp_path / mode, f"collab.mode='{mode}'", f"train.init_from='{tmp_path / 'first'}'"),
            ctx,
        )

    def evals(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == "eval"]

    assert evals(mode)[0]["iter"] == 0
    assert evals(mode)[0]["val_loss"] == pytest.approx(evals("first")[-1]["val_loss"], rel=1e-6)
