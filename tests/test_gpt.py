"""The GPT path in one process: model, config, token windows, the loop, resume and generation.

Runs train in-process at world size 1 (a one-process gloo group); the two-rank checks are in
test_gpt_dist.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gpt_shards import char_shards, gpt_overrides

from contracts.tokenizer import load_tokenizer
from training.config import describe, load_config
from training.dist import distributed
from training.gpt import GPT, GPTShape, generate
from training.lm_config import AdamWConfig, GPTConfig
from training.lm_data import BatchSlice, TokenWindows
from training.lm_loop import build_adamw, run_training

REPO = Path(__file__).resolve().parent.parent
# A sentence repeated: after a few characters of context every next character is determined.
REPEATED = "the quick brown fox jumps over the lazy dog; " * 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return char_shards(tmp_path_factory.mktemp("gpt") / "shards", train_shards=2)


def train_in_process(overrides: list[str]) -> dict:
    cfg = load_config(None, overrides)
    assert isinstance(cfg, GPTConfig)
    with distributed() as ctx:
        return run_training(cfg, ctx)


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ---------------------------------------------------------------------------------------- model


def tiny_gpt(vocab: int = 50, dropout: float = 0.0, n_layer: int = 2) -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTShape(vocab_size=vocab, block_size=16, n_layer=n_layer, n_head=2, n_embd=32, dropout=dropout)
    )


def test_loss_at_initialisation_is_about_ln_vocab() -> None:
    vocab = 500
    model = tiny_gpt(vocab)
    x = torch.randint(0, vocab, (8, 16), generator=torch.Generator().manual_seed(1))
    logits, _ = model(x)
    loss = F.cross_entropy(logits.reshape(-1, vocab), torch.roll(x, -1, 1).reshape(-1))
    assert abs(loss.item() - math.log(vocab)) < 0.05


def test_weights_are_tied_and_residual_projections_scaled() -> None:
    model = tiny_gpt(n_layer=8)
    assert model.lm_head.weight is model.wte.weight
    # Distinct parameters: the tied matrix is counted once.
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))
    residual = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks])
    other = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)


def test_attention_is_causal() -> None:
    model = tiny_gpt().eval()
    x = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50  # change only the future of position 9
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_kv_cache_generation_equals_recomputing_the_context() -> None:
    model = tiny_gpt().eval()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    cached = generate(model, prompt, 30, temperature=0)  # runs past block_size (16): the window slides
    seq = prompt
    with torch.no_grad():
        for _ in range(30):
            logits, _ = model(seq[:, -16:])
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


# ---------------------------------------------------------------------------------------- config


def test_gpt_configs_have_their_own_keys() -> None:
    cfg = load_config(REPO / "conf" / "train" / "gpt_char.toml")
    assert isinstance(cfg, GPTConfig)
    m, t, o = cfg.model, cfg.train, cfg.optim
    # nanoGPT's CPU baby run of train_shakespeare_char.
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.max_iters, t.eval_iters) == (12, 2000, 20)
    assert (o.lr, o.min_lr, o.betas[1], o.warmup_iters, o.lr_decay_iters) == (1e-3, 1e-4, 0.99, 100, 2000)
    gpu = load_config(REPO / "conf" / "train" / "gpt_char_gpu.toml")
    assert (gpu.model.n_layer, gpu.model.n_embd, gpu.model.block_size, gpu.model.dropout) == (
        6,
        384,
        256,
        0.2,
    )
    assert (gpu.train.batch_size, gpu.train.max_iters) == (64, 5000)
    text = describe(cfg)
    assert "n_layer" in text and "warmup_iters" in text
    for classifier_key in ("epochs", "hidden", "momentum", "test_split", "eval_batch_size"):
        assert f"  {classifier_key} =" not in text


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.n_head=3", "model.n_head"),  # 32 dims do not split into 3 heads
        ("model.vocab_size=65", "model.vocab_size"),  # the vocabulary comes from the shards
        ("train.micro_batch=3", "train.micro_batch"),  # does not divide the per-rank batch of 8
        ("optim.min_lr=1.0", "optim.min_lr"),
        ("train.bf16=true", "train.bf16"),  # GPU only
        ("train.strategy=zero3", "train.strategy"),
        ("train.epochs=3", "train.epochs"),
    ],
)
def test_bad_gpt_keys_are_named(tmp_path: Path, override: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_config(None, [*gpt_overrides(tmp_path, tmp_path / "run"), override])


def test_learning_rate_schedule() -> None:
    o = AdamWConfig(lr=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000)
    assert o.lr_at(0) == pytest.approx(1e-3 / 101)
    assert o.lr_at(99) == pytest.approx(1e-3 * 100 / 101)
    assert o.lr_at(100) == pytest.approx(1e-3)
    assert o.lr_at(1050) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the cosine
    assert o.lr_at(2000) == o.lr_at(5000) == pytest.approx(1e-4)


def test_weight_decay_on_two_dimensional_weights_only() -> None:
    model = tiny_gpt()
    opt, _ = build_adamw(model, AdamWConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert any(p is model.wte.weight for p in decayed["params"])
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


# ---------------------------------------------------------------------------------------- data


def test_windows_are_slices_of_the_token_stream(shards: Path) -> None:
    tok = load_tokenizer(shards)
    from gpt_shards import TEXT

    ids = np.array(tok.encode(TEXT))
    windows = TokenWindows(shards, "train", 16)
    assert windows.vocab_size == tok.vocab_size
    train_part = ids[: int(len(ids) * 0.9)]
    half = len(np.array_split(train_part, 2)[0])
    # Window numbering runs through shard 0, then shard 1 (no window crosses a shard boundary).
    starts = np.array([0, 5, windows.num_windows - 1])
    x, y = windows.windows(starts)
    expected_starts = [0, 5, half + (len(train_part) - half - 17)]
    for row, s in enumerate(expected_starts):
        assert x[row].tolist() == train_part[s : s + 16].tolist()
        assert y[row].tolist() == train_part[s + 1 : s + 17].tolist()


def test_rank_slices_partition_the_global_batch(shards: Path) -> None:
    windows = TokenWindows(shards, "train", 16)
    whole = windows.train_starts(seed=3, iteration=7, global_batch=12)
    parts = [
        whole[slice(*BatchSlice(micro_step=m, rank=r, world_size=2, micro_batch=3).bounds())]
        for m in range(2)
        for r in range(2)
    ]
    assert sorted(np.concatenate(parts).tolist()) == sorted(whole.tolist())
    assert not np.array_equal(whole, windows.train_starts(seed=3, iteration=8, global_batch=12))


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    root = char_shards(tmp_path / "s")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["vocab_size"] = 3  # ids >= 3 are now out of range
    (root / "manifest.json").write_text(json.dumps(manifest))
    windows = TokenWindows(root, "train", 16)
    with pytest.raises(ValueError, match="vocab_size"):
        windows.windows(np.arange(windows.num_windows))


# ---------------------------------------------------------------------------------------- loop


def test_run_writes_metrics_checkpoint_and_result(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train_in_process(gpt_overrides(shards, run, "run.plots=true"))
    vocab = load_tokenizer(shards).vocab_size
    evals = records(run, "eval")
    assert [r["iter"] for r in evals] == [0, 3, 6]
    assert abs(evals[0]["val_loss"] - math.log(vocab)) < 0.15  # the first evaluation is at init
    trains = records(run, "train")
    assert [r["iter"] for r in trains] == [3, 6]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["cpu_s_per_iter"] > 0 for r in trains)
    # The lr logged at iteration 3 is the one the third step (iteration index 2) used.
    assert trains[0]["lr"] == pytest.approx(AdamWConfig(warmup_iters=2, lr_decay_iters=6).lr_at(2))
    assert result["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert (run / "curves.png").stat().st_size > 0
    assert json.loads((run / "result.json").read_text())["iters"] == 6


def test_gradient_accumulation_equals_the_larger_batch(shards: Path, tmp_path: Path) -> None:
    train_in_process(gpt_overrides(shards, tmp_path / "big", "train.micro_batch=8"))
    train_in_process(gpt_overrides(shards, tmp_path / "acc", "train.micro_batch=2"))  # 4 passes of 2
    big, acc = model_state(tmp_path / "big"), model_state(tmp_path / "acc")
    assert big.keys() == acc.keys()
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=0, atol=2e-6)
    assert not torch.equal(big["wte.weight"], tiny_gpt(load_tokenizer(shards).vocab_size).wte.weight)


def test_resume_is_bit_exact(shards: Path, tmp_path: Path) -> None:
    from training.faults import InjectedFault

    # Dropout on: the resumed run must also restore the random state.
    common = ("model.dropout=0.2", "train.max_iters=6")
    train_in_process(gpt_overrides(shards, tmp_path / "whole", *common))
    whole = model_state(tmp_path / "whole")
    # Stopped after an evaluation (iteration 3), then resumed.
    train_in_process(gpt_overrides(shards, tmp_path / "part", "model.dropout=0.2", "train.max_iters=3"))
    result = train_in_process(gpt_overrides(shards, tmp_path / "part", *common, "run.resume=true"))
    assert result["resumed_from_iter"] == 3
    # Crashed at iteration 5, resumed from the run.checkpoint_every checkpoint of iteration 4.
    crash = (*common, "run.checkpoint_every=2")
    with pytest.raises(InjectedFault, match="fails at step 5"):
        train_in_process(
            gpt_overrides(shards, tmp_path / "crash", *crash, "fault.fail_rank=0", "fault.fail_at_step=5")
        )
    result = train_in_process(gpt_overrides(shards, tmp_path / "crash", *crash, "run.resume=true"))
    assert result["resumed_from_iter"] == 4
    for run in ("part", "crash"):
        state = model_state(tmp_path / run)
        for k in whole:
            assert torch.equal(whole[k], state[k]), (run, k)
        assert [r["iter"] for r in records(tmp_path / run, "eval")] == [0, 3, 6]


# ---------------------------------------------------------------------------------------- learning + generate


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overfit")
    shards = char_shards(root / "shards", text=REPEATED, val_fraction=0.2)
    run = root / "run"
    train_in_process(
        gpt_overrides(
            shards,
            run,
            "train.max_iters=120",
            "train.eval_interval=120",
            "train.log_interval=40",
            "optim.lr=1e-2",
            "optim.min_lr=1e-3",
            "optim.warmup_iters=10",
            "optim.lr_decay_iters=120",
            "optim.weight_decay=0.0",
        )
    )
    return run


def test_a_tiny_model_overfits_a_tiny_corpus(overfit_run: Path) -> None:
    last = records(overfit_run, "eval")[-1]
    # ln(vocab) is about 3.3 at the start; only the first characters of a window are ambiguous.
    assert last["train_loss"] < 0.15 and last["val_loss"] < 0.15


def test_generate_continues_the_corpus_and_is_deterministic(
    overfit_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.predict.generate import main

    assert (
        main(
            [
                "--run",
                str(overfit_run),
                "--prompt",
                "the quick",
                "--max-new-tokens",
                "60",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    greedy = capsys.readouterr().out
    assert greedy.startswith(REPEATED[:69])
    outs = []
    for seed in (1, 1, 2):
        args = [
            "--run",
            str(overfit_run),
            "--max-new-tokens",
            "80",
            "--temperature",
            "3",
            "--seed",
            str(seed),
        ]
        assert main(args) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_generate_errors_are_one_line(
    tmp_path: Path, overfit_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.predict.generate import main

    assert main(["--run", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["--run", str(overfit_run), "--prompt", "QX"]) == 2  # capitals are not in the vocabulary
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --prompt")


def test_a_warm_start_begins_from_the_earlier_runs_model(shards: Path, tmp_path: Path) -> None:
    """The warm-started run's evaluation at iteration 0 is the earlier run's last one: same model,
    same fixed val windows. Then it trains on with a fresh optimizer and schedule."""
    train_in_process(gpt_overrides(shards, tmp_path / "first"))
    result = train_in_process(
        gpt_overrides(shards, tmp_path / "second", f"train.init_from='{tmp_path / 'first'}'", "train.seed=7")
    )
    first, second = records(tmp_path / "first", "eval"), records(tmp_path / "second", "eval")
    assert second[0]["iter"] == 0 and second[0]["val_loss"] == first[-1]["val_loss"]
    assert result["best_val_loss"] < first[0]["val_loss"]  # far below a random init's
    assert not torch.equal(
        model_state(tmp_path / "first")["wte.weight"], model_state(tmp_path / "second")["wte.weight"]
    )


def test_a_warm_start_from_another_model_or_nothing_is_named(shards: Path, tmp_path: Path) -> None:
    train_in_process(gpt_overrides(shards, tmp_path / "wide", "model.n_embd=48", "model.n_head=2"))
    with pytest.raises(ValueError, match=r"train.init_from: .* its model.n_embd is 48, this run's 32"):
        train_in_process(gpt_overrides(shards, tmp_path / "run", f"train.init_from='{tmp_path / 'wide'}'"))
    with pytest.raises(ValueError, match=r"train.init_from: .* has no checkpoint.pt"):
        train_in_process(gpt_overrides(shards, tmp_path / "run", f"train.init_from='{tmp_path / 'none'}'"))


def test_a_warm_start_on_shards_of_another_tokenizer_is_named(shards: Path, tmp_path: Path) -> None:
    """As many ids is not the same ids: shards whose char set differs by one letter are refused."""
    from gpt_shards import TEXT

    assert "Q" not in TEXT and "F" in TEXT
    other = char_shards(tmp_path / "other", text=TEXT.replace("F", "Q"), train_shards=2)
    assert load_tokenizer(other).vocab_size == load_tokenizer(shards).vocab_size
    train_in_process(gpt_overrides(shards, tmp_path / "first"))
    with pytest.raises(ValueError, match=r"train.init_from: .* another tokenizer .* --tokenizer file:"):
        train_in_process(gpt_overrides(other, tmp_path / "run", f"train.init_from='{tmp_path / 'first'}'"))
