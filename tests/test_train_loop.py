"""The training loop in one process (world size 1, gloo group of one): no Spark, no torchrun."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_shards import blob_shards

from training.checkpoint import load_model_state
from training.config import load_config
from training.data import iter_batches, load_shard
from training.faults import InjectedFault
from training.loop import train
from training.models import build_model
from training.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=256, shards=2)


def cfg_for(shards: Path, run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"data.shards='{shards}'",
            f"run.dir='{run_dir}'",
            "launch.num_processes=1",
            "train.batch_size=32",
            "train.epochs=3",
            "run.plots=false",
            *extra,
        ],
    )


def test_keras_time_decay() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt, sched = build_optimizer([p], load_config(None, ["optim.decay=0.1"]).optim)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01 / (1 + 0.1 * t) for t in range(4)])


def plain_reference(shards: Path, epochs: int, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Independent plain-PyTorch loop: same model init, same batches, SGD Nesterov + time decay by hand."""
    data = load_shard(shards, "train")
    torch.manual_seed(seed)
    model = build_model("mlp784", data.feature_shape, data.num_classes)
    bufs = [torch.zeros_like(p) for p in model.parameters()]
    t = 0
    for epoch in range(1, epochs + 1):
        for x, y in iter_batches(data, batch, shuffle=True, seed=seed, epoch=epoch, drop_last=True):
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            lr = 0.01 / (1 + 1e-6 * t)
            with torch.no_grad():
                for p, b in zip(model.parameters(), bufs, strict=True):
                    b.mul_(0.9).add_(p.grad)
                    p.sub_(lr * (p.grad + 0.9 * b))  # Nesterov, as torch.optim.SGD defines it
            t += 1
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_process_matches_a_plain_loop(shards: Path, tmp_path: Path, strategy: str) -> None:
    result = train(cfg_for(shards, tmp_path / "run", f"train.strategy={strategy}"))
    got = load_model_state(tmp_path / "run" / "checkpoint.pt")
    want = plain_reference(shards, epochs=3, batch=32, seed=0)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert result["steps"] == 3 * (256 // 32)


def test_outputs_metrics_and_result(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(cfg_for(shards, run, "run.plots=true"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert {"train_loss", "train_accuracy", "val_accuracy", "samples_per_s", "epoch_time_s"} <= r.keys()
        assert 0 <= r["train_accuracy"] <= 1 and r["samples_per_s"] > 0
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk["test_samples"] == 64 and on_disk["world_size"] == 1
    assert on_disk["config"]["train"]["epochs"] == 3
    assert result["test_accuracy"] == on_disk["test_accuracy"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in run.iterdir() if "tmp" in p.name]  # atomic writes leave no debris


def test_test_accuracy_matches_an_independent_count(shards: Path, tmp_path: Path) -> None:
    result = train(cfg_for(shards, tmp_path / "run", "train.eval_batch_size=7"))
    data = load_shard(shards, "test")
    model = build_model("mlp784", data.feature_shape, data.num_classes)
    model.load_state_dict(load_model_state(tmp_path / "run" / "checkpoint.pt"))
    with torch.no_grad():
        correct = int((model(data.features).argmax(1) == data.labels).sum())
    assert result["test_accuracy"] == pytest.approx(correct / len(data))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_continues_exactly(shards: Path, tmp_path: Path, strategy: str) -> None:
    straight = tmp_path / "straight"
    train(cfg_for(shards, straight, f"train.strategy={strategy}", "optim.decay=0.01"))
    parted = tmp_path / "parted"
    train(cfg_for(shards, parted, f"train.strategy={strategy}", "optim.decay=0.01", "train.epochs=1"))
    result = train(
        cfg_for(shards, parted, f"train.strategy={strategy}", "optim.decay=0.01", "run.resume=true")
    )
    assert result["resumed_from_epoch"] == 1
    a, b = load_model_state(straight / "checkpoint.pt"), load_model_state(parted / "checkpoint.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    epochs = [json.loads(x)["epoch"] for x in (parted / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    saved = torch.load(parted / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 3 and saved["step"] == 3 * 8
    assert saved["scheduler"]["last_epoch"] == 24
    assert math.isclose(saved["optimizer"]["param_groups"][0]["lr"], 0.01 / (1 + 0.01 * 24))


def test_resume_without_checkpoint_starts_fresh(shards: Path, tmp_path: Path) -> None:
    result = train(cfg_for(shards, tmp_path / "run", "run.resume=true", "train.epochs=1"))
    assert result["resumed_from_epoch"] is None and result["steps"] == 8


def test_fault_injection_raises_at_the_step(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(InjectedFault, match="rank 0 fails at step 10"):
        train(cfg_for(shards, tmp_path / "run", "fault.fail_rank=0", "fault.fail_at_step=10"))
    # Epoch 1 (steps 0-7) completed and was checkpointed before the fault.
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_too_few_shards_for_the_ranks_is_an_error(shards: Path, tmp_path: Path) -> None:
    from training.dist import DistContext
    from training.loop import load_rank_data

    ctx = DistContext(global_rank=0, local_rank=0, world_size=3, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(ValueError, match=r"launch\.num_processes=3"):
        load_rank_data(str(shards), "train", ctx)


@pytest.mark.parametrize("extra", [["train.bf16=true"], ["optim.name=adam", "optim.lr=0.01"]])
def test_bf16_autocast_and_adam_train(shards: Path, tmp_path: Path, extra: list[str]) -> None:
    result = train(cfg_for(shards, tmp_path / "run", "train.epochs=2", *extra))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in lines)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]  # it learns
    assert result["steps"] == 16


def test_use_gpu_without_cuda_names_the_key(shards: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"launch\.use_gpu"):
        train(cfg_for(shards, tmp_path / "run", "launch.use_gpu=true"))


def test_cli_refuses_an_earlier_run_without_overwrite(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text("{}")
    assert main(["--set", f"data.shards='{shards}'", "--set", f"run.dir='{run}'"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "run.resume=true" in err
    assert (run / "result.json").read_text() == "{}"  # untouched


def _gloo_threads() -> int:
    task_dir = Path("/proc/self/task")
    return sum("gloo" in (t / "comm").read_text() for t in task_dir.iterdir())


def _process_group_worker(rank: int, port: int, shards: str, run_dir: str, strategy: str, out: str) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    before = _gloo_threads()
    train(cfg_for(Path(shards), Path(run_dir), "launch.num_processes=2", f"train.strategy={strategy}"))
    Path(out, f"rank{rank}").write_text(f"{before} {_gloo_threads()}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_process_group_is_gone_when_train_returns(shards: Path, tmp_path: Path, strategy: str) -> None:
    # DDP on two ranks holds the gloo group in a reference cycle (at world size 1 DDP is not
    # used, so only a 2-rank run can show it). A group that outlived destroy_process_group() was
    # torn down during interpreter exit and aborted ranks with SIGABRT: every gloo thread that a
    # rank had when train() returned is such a leftover.
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(
        _process_group_worker,
        args=(port, str(shards), str(tmp_path / "run"), strategy, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        before, after = map(int, (tmp_path / f"rank{rank}").read_text().split())
        assert after == before, f"rank {rank}: {after - before} gloo threads left after train()"
