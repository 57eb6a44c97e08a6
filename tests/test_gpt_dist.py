"""The GPT on two CPU ranks (gloo) through TorchDistributor: DDP and FSDP2 against one process.

Two launches: one runs a DDP and an FSDP training in a row on the same two ranks (the driver
compares their checkpoints with a one-process run of the same global batch), the other goes
through ``spark-collab train`` with a GPT config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import spark_args
from gpt_shards import char_shards, gpt_overrides

pytestmark = pytest.mark.distributed


def _rank_runs(runs: list[list[str]]) -> list[int]:
    """Runs on every rank: one GPT training per override list, in order."""
    from training.config import load_config
    from training.lm_loop import train

    return [train(load_config(None, overrides))["world_size"] for overrides in runs]


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value() -> None:
    # Rank processes cannot import this test module by name; ship its functions by value.
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return char_shards(tmp_path_factory.mktemp("gpt_dist") / "shards", train_shards=2)


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def val_losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["val_loss"] for r in map(json.loads, lines) if r["kind"] == "eval"]


def test_ddp_and_fsdp_on_two_ranks_equal_one_process(spark, shards: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import launch
    from training.dist import distributed
    from training.lm_loop import run_training

    two = ("launch.num_processes=2",)
    runs = [
        gpt_overrides(shards, tmp_path / "ddp", *two, "train.strategy=ddp"),
        gpt_overrides(shards, tmp_path / "fsdp", *two, "train.strategy=fsdp"),
    ]
    assert launch(_rank_runs, runs, num_processes=2, local_mode=True, timeout_s=240) == [2, 2]

    from training.config import load_config

    with distributed() as ctx:  # the reference: one process, the same global batch of 8 sequences
        run_training(load_config(None, gpt_overrides(shards, tmp_path / "one")), ctx)  # type: ignore[arg-type]
    one, ddp, fsdp = state(tmp_path / "one"), state(tmp_path / "ddp"), state(tmp_path / "fsdp")
    assert not torch.equal(one["wte.weight"], torch.zeros_like(one["wte.weight"]))
    # Sums of float32 gradients in another order: equal within rounding, six AdamW steps on.
    assert_close_states(ddp, one, atol=1e-5)
    assert_close_states(fsdp, ddp, atol=1e-5)
    # Val losses averaged over the two ranks' slices == the one-process mean over all windows.
    assert val_losses(tmp_path / "ddp") == pytest.approx(val_losses(tmp_path / "one"), abs=1e-5)
    assert val_losses(tmp_path / "fsdp") == pytest.approx(val_losses(tmp_path / "one"), abs=1e-5)


def test_train_cli_runs_a_gpt_config(
    spark, shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.train import main

    repo = Path(__file__).resolve().parent.parent
    sets = gpt_overrides(shards, tmp_path / "run", "launch.num_processes=2", "run.plots=true")
    argv = ["--config", str(repo / "conf" / "train" / "gpt_char.toml")]
    argv += [x for s in sets if not s.startswith("model.name") for x in ("--set", s)]
    assert main(spark_args(*argv)) == 0
    out = capsys.readouterr().out
    assert "done: gpt ddp x2 best_val_loss=" in out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["world_size"] == 2 and result["iters"] == 6
    assert (tmp_path / "run" / "curves.png").is_file()
