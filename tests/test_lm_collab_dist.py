"""Collaborative GPT runs on two CPU ranks (gloo), checked against single-process hand references.

One launch runs everything on the same two ranks: counted collectives, DiLoCo, FedAvg, an
interrupted-and-resumed DiLoCo run, codistillation with weight 0, independent peers, codistillation
uninterrupted and interrupted-and-resumed, and a DDP run. The DDP run's batch (``train.batch_size``,
one model's) is 8; every collaborative replica is a model of its own with a batch of 4, so the two
replicas of a step read the 8 windows DDP reads.
The driver then rebuilds DiLoCo, FedAvg and independent training by hand in one process (two
replicas simulated with plain torch: AdamW per replica, the outer Nesterov update written out) and
compares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from gpt_shards import char_shards, gpt_overrides

pytestmark = pytest.mark.distributed

H = 2  # inner steps per outer step
ITERS = 6  # gpt_overrides' train.max_iters: 3 outer steps
FLOAT_PAYLOAD = 37  # elements of the float32 tensor all-reduced by hand
INT_PAYLOAD = 5  # elements of the int64 tensor
REPLICA_BATCH = 4  # train.batch_size of each collaborative replica: half of gpt_overrides' 8


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value() -> None:
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _cfg(shards: Path, run_dir: Path, *extra: str) -> Any:
    """A two-rank collaborative config (each replica's batch REPLICA_BATCH) in ``run_dir``."""
    from training.config import load_config

    overrides = ("launch.num_processes=2", f"train.batch_size={REPLICA_BATCH}", *extra)
    return load_config(None, gpt_overrides(shards, run_dir, *overrides))


def _ddp_cfg(shards: Path, run_dir: Path) -> Any:
    """The data-parallel config of the same token budget: one model, gpt_overrides' batch of 8 on 2 ranks."""
    from training.config import load_config

    return load_config(None, gpt_overrides(shards, run_dir, "launch.num_processes=2"))


def _on_ranks(job: dict[str, Any]) -> dict[str, Any]:
    """Every run of the test on this rank, in order, inside one process group."""
    from training.comm import CommCounter, all_reduce
    from training.dist import distributed
    from training.lm_collab import run_collab
    from training.lm_loop import run_training

    shards, root = Path(job["shards"]), Path(job["root"])
    out: dict[str, Any] = {}
    with distributed() as ctx:
        counter = CommCounter()
        floats = torch.full((FLOAT_PAYLOAD,), float(ctx.global_rank + 1))
        all_reduce(floats, counter)
        all_reduce(torch.ones(INT_PAYLOAD, dtype=torch.int64), counter)
        out["comm"] = {"bytes": counter.bytes_sent, "calls": counter.calls, "sum": floats.tolist()}

        collab = (f"collab.inner_steps={H}",)
        out["diloco"] = run_collab(_cfg(shards, root / "diloco", "collab.mode='diloco'", *collab), ctx)
        out["fedavg"] = run_collab(_cfg(shards, root / "fedavg", "collab.mode='fedavg'", *collab), ctx)
        # Interrupted after 2 outer steps, then resumed to the end.
        run_collab(_cfg(shards, root / "resumed", "collab.mode='diloco'", *collab, "train.max_iters=4"), ctx)
        out["resumed"] = run_collab(
            _cfg(shards, root / "resumed", "collab.mode='diloco'", *collab, "run.resume=true"), ctx
        )
        peers = ("collab.exchange_every=2", "train.eval_interval=6")
        out["dml0"] = run_collab(
            _cfg(shards, root / "dml0", "collab.mode='dml'", "collab.weight=0", *peers), ctx
        )
        out["independent"] = run_collab(
            _cfg(shards, root / "indep", "collab.mode='independent'", *peers), ctx
        )
        out["dml"] = run_collab(
            _cfg(shards, root / "dml", "collab.mode='dml'", "collab.weight=1", *peers), ctx
        )
        # Checkpoints at steps 3 and 6: the one at 3 falls between the exchanges at 2 and 4, so the
        # resumed run must rebuild the stale copies of step 2. Dropout draws from the restored RNG.
        dml = ("collab.mode='dml'", "collab.weight=1", "collab.exchange_every=2", "model.dropout=0.1")
        out["dml_whole"] = run_collab(_cfg(shards, root / "dml_whole", *dml), ctx)
        run_collab(_cfg(shards, root / "dml_resumed", *dml, "train.max_iters=3"), ctx)
        out["dml_resumed"] = run_collab(_cfg(shards, root / "dml_resumed", *dml, "run.resume=true"), ctx)
        out["ddp"] = run_training(_ddp_cfg(shards, root / "ddp"), ctx)
    return out


@pytest.fixture(scope="module")
def ranks(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import launch

    root = tmp_path_factory.mktemp("lm_collab")
    shards = char_shards(root / "shards")
    job = {"shards": str(shards), "root": str(root)}
    return shards, root, launch(_on_ranks, job, num_processes=2, local_mode=True, timeout_s=300)


# ----------------------------------------------------------------------------------------------
# The hand reference: two replicas in one process, plain torch
# ----------------------------------------------------------------------------------------------


def _replica(cfg: Any, vocab: int, seed: int) -> torch.nn.Module:
    from training.lm_loop import build_gpt

    torch.manual_seed(seed)
    return build_gpt(cfg.model, vocab)


def _adamw(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))


def _inner_step(
    model: torch.nn.Module,
    opt: torch.optim.AdamW,
    cfg: Any,
    windows: Any,
    it: int,
    rank: int,
    teacher: torch.nn.Module | None = None,
) -> None:
    """One AdamW step of replica ``rank``: its batch, slice ``rank`` of the two replicas' draw of
    iteration ``it``; with a ``teacher``, plus the per-token KL(p_teacher || p_model) at weight 1."""
    batch = cfg.train.batch_size
    starts = windows.train_starts(cfg.train.seed, it, 2 * batch)[rank * batch : (rank + 1) * batch]
    x, y = windows.windows(starts)
    for group in opt.param_groups:
        group["lr"] = cfg.optim.lr_at(it)
    logits, _ = model(x)
    logits = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(logits, y.reshape(-1))
    if teacher is not None:
        with torch.no_grad():
            p_teacher = torch.softmax(teacher(x)[0].reshape(logits.shape), dim=-1)
        kl_per_token = (p_teacher * (p_teacher.log() - torch.log_softmax(logits, dim=-1))).sum(dim=-1)
        loss = loss + kl_per_token.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    opt.step()
    opt.zero_grad()


def reference_outer(cfg: Any, shards: Path, lr: float, momentum: float) -> dict[str, torch.Tensor]:
    """DiLoCo by hand: 2 replicas, H inner steps, then outer Nesterov SGD on the mean delta."""
    from training.lm_data import TokenWindows

    windows = TokenWindows(shards, "train", cfg.model.block_size)
    replicas = [_replica(cfg, windows.vocab_size, cfg.train.seed) for _ in range(2)]
    opts = [_adamw(m, cfg) for m in replicas]
    outer = {k: v.clone() for k, v in replicas[0].named_parameters()}
    velocity = {k: torch.zeros_like(v) for k, v in outer.items()}
    for it in range(ITERS):
        for rank in range(2):
            _inner_step(replicas[rank], opts[rank], cfg, windows, it, rank)
        if (it + 1) % H == 0:
            with torch.no_grad():
                local = [dict(m.named_parameters()) for m in replicas]
                for k in outer:
                    g = ((outer[k] - local[0][k]) + (outer[k] - local[1][k])) / 2
                    velocity[k] = momentum * velocity[k] + g
                    step = g + momentum * velocity[k] if momentum else g
                    outer[k] = outer[k] - lr * step
                for m in replicas:
                    for k, p in m.named_parameters():
                        p.copy_(outer[k])
    return outer


def _val_loss(model: torch.nn.Module, cfg: Any, shards: Path) -> float:
    """Mean cross-entropy over the fixed val windows every run evaluates on (both replicas' batches per
    evaluation batch, as DDP's)."""
    from training.lm_data import TokenWindows

    val = TokenWindows(shards, "val", cfg.model.block_size)
    x, y = val.windows(val.fixed_starts(cfg.train.eval_iters * 2 * cfg.train.batch_size))
    with torch.no_grad():
        logits, _ = model(x)
        return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))


def reference_codistillation(cfg: Any, shards: Path) -> list[float]:
    """Codistillation by hand: 2 peers, each pulled (weight 1) toward a copy of the other taken every 2 steps."""
    import copy

    from training.lm_data import TokenWindows

    windows = TokenWindows(shards, "train", cfg.model.block_size)
    peers = [_replica(cfg, windows.vocab_size, cfg.train.seed + 1000 * rank) for rank in range(2)]
    opts = [_adamw(m, cfg) for m in peers]
    stale: list[torch.nn.Module] = []
    for it in range(ITERS):
        if it % 2 == 0:
            stale = [copy.deepcopy(m) for m in peers]
        for rank in range(2):
            _inner_step(peers[rank], opts[rank], cfg, windows, it, rank, teacher=stale[1 - rank])
    return [_val_loss(m, cfg, shards) for m in peers]


def _checkpoint_model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def _assert_matches(run_dir: Path, reference: dict[str, torch.Tensor]) -> None:
    saved = _checkpoint_model(run_dir)
    for k, v in reference.items():
        torch.testing.assert_close(saved[k], v, rtol=0, atol=2e-6, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------------------------------


def test_counted_all_reduce_is_numel_times_element_size(ranks) -> None:  # type: ignore[no-untyped-def]
    _, _, out = ranks
    assert out["comm"]["bytes"] == FLOAT_PAYLOAD * 4 + INT_PAYLOAD * 8
    assert out["comm"]["calls"] == 2
    assert out["comm"]["sum"] == [3.0] * FLOAT_PAYLOAD  # ranks held 1 and 2: the collective really ran


def test_diloco_equals_two_replicas_by_hand(ranks) -> None:  # type: ignore[no-untyped-def]
    shards, root, out = ranks
    cfg = _cfg(shards, root / "ref")
    _assert_matches(root / "diloco", reference_outer(cfg, shards, lr=0.7, momentum=0.9))
    result = out["diloco"]
    assert result["rounds"] == ITERS // H
    # One all-reduce of every (distinct) float32 parameter per outer step.
    n_params = sum(p.numel() for p in _replica(cfg, result["vocab_size"], 0).parameters())
    assert result["comm_bytes"] == (ITERS // H) * n_params * 4


def test_fedavg_is_plain_averaging(ranks) -> None:  # type: ignore[no-untyped-def]
    shards, root, out = ranks
    _assert_matches(
        root / "fedavg", reference_outer(_cfg(shards, root / "ref"), shards, lr=1.0, momentum=0.0)
    )
    assert out["fedavg"]["comm_bytes"] == out["diloco"]["comm_bytes"]
    assert out["fedavg"]["val_loss"] != out["diloco"]["val_loss"]


def test_diloco_resume_is_bitwise_exact(ranks) -> None:  # type: ignore[no-untyped-def]
    _, root, out = ranks
    assert out["resumed"]["resumed_from_iter"] == 4
    whole = torch.load(root / "diloco" / "checkpoint.pt", map_location="cpu", weights_only=False)
    resumed = torch.load(root / "resumed" / "checkpoint.pt", map_location="cpu", weights_only=False)
    for k, v in whole["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    buffers = [s["momentum_buffer"] for s in whole["optimizer"]["state"].values()]
    resumed_buffers = [s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()]
    assert buffers and all(torch.equal(a, b) for a, b in zip(buffers, resumed_buffers, strict=True))
    assert out["resumed"]["comm_bytes"] == out["diloco"]["comm_bytes"]
    assert out["resumed"]["val_loss"] == out["diloco"]["val_loss"]


def test_codistillation_with_weight_zero_is_independent_training(ranks) -> None:  # type: ignore[no-untyped-def]
    from training.lm_data import TokenWindows

    shards, root, out = ranks
    cfg = _cfg(shards, root / "ref")
    windows = TokenWindows(shards, "train", cfg.model.block_size)
    expected = []
    for rank in range(2):
        model = _replica(cfg, windows.vocab_size, cfg.train.seed + 1000 * rank)
        opt = _adamw(model, cfg)
        for it in range(ITERS):
            _inner_step(model, opt, cfg, windows, it, rank)
        expected.append(_val_loss(model, cfg, shards))
    assert out["dml0"]["peer_val_losses"] == pytest.approx(expected, abs=1e-5)
    assert out["independent"]["peer_val_losses"] == pytest.approx(expected, abs=1e-5)
    assert out["independent"]["comm_bytes"] == 0
    # Parameters gathered at steps 0, 2 and 4 (exchange_every = 2).
    assert out["dml0"]["comm_bytes"] == 3 * out["dml0"]["parameter_bytes"]


def test_codistillation_equals_two_peers_by_hand(ranks) -> None:  # type: ignore[no-untyped-def]
    shards, root, out = ranks
    expected = reference_codistillation(_cfg(shards, root / "ref"), shards)
    assert out["dml"]["peer_val_losses"] == pytest.approx(expected, abs=1e-5)
    assert out["dml"]["peer_val_losses"] != pytest.approx(out["independent"]["peer_val_losses"], abs=1e-4)
    # The KL term moves the peers toward each other.
    assert out["dml"]["peer_kl"] < out["independent"]["peer_kl"]


def test_codistillation_resume_is_bitwise_exact(ranks) -> None:  # type: ignore[no-untyped-def]
    _, root, out = ranks
    whole, resumed = out["dml_whole"], out["dml_resumed"]
    assert resumed["resumed_from_iter"] == 3 and whole["resumed_from_iter"] is None
    assert resumed["peer_val_losses"] == whole["peer_val_losses"]
    assert resumed["peer_kl"] == whole["peer_kl"]
    assert (resumed["comm_bytes"], resumed["exchanges"]) == (whole["comm_bytes"], whole["exchanges"])
    a = torch.load(root / "dml_whole" / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(root / "dml_resumed" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert a["step"] == b["step"] == ITERS
    peer1_a, peer1_b = a["rank_state"][1], b["rank_state"][1]
    for k, v in a["model"].items():  # peer 0
        assert torch.equal(b["model"][k], v), k
    for k, v in peer1_a["model"].items():
        assert torch.equal(peer1_b["model"][k], v), k
    for state_a, state_b in ((a["optimizer"], b["optimizer"]), (peer1_a["optimizer"], peer1_b["optimizer"])):
        moments = [t for s in state_a["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]
        resumed_moments = [t for s in state_b["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]
        assert moments and all(torch.equal(x, y) for x, y in zip(moments, resumed_moments, strict=True))
    for rng_a, rng_b in zip(a["rng"], b["rng"], strict=True):
        assert torch.equal(rng_a["torch"], rng_b["torch"])
    lines = (root / "dml_resumed" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["iter"] for line in lines if '"eval"' in line] == [0, 3, 6]


def test_ddp_gradient_bytes_are_counted(ranks) -> None:  # type: ignore[no-untyped-def]
    _, root, out = ranks
    # One gradient all-reduce of every parameter per step (no accumulation).
    assert out["ddp"]["comm_bytes"] == ITERS * out["diloco"]["parameter_bytes"]
    lines = (root / "ddp" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert all('"comm_bytes"' in line for line in lines)
