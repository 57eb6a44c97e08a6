"""Two CPU ranks (gloo) through TorchDistributor: equivalence, resume, failure surfacing, timeouts.

Launches cost ~5-15 s each here, so one launch runs all the training checks (four runs in a
row on the same two ranks) and the driver compares the checkpoints they leave behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import spark_args
from train_shards import blob_shards

pytestmark = pytest.mark.distributed

B = 32  # global batch: 16 per rank
EPOCHS = 2
DECAY = 0.01  # large enough that a wrong step count would show in the learning rate


def _rank_runs(runs: list[list[str]]) -> dict:
    """Runs on every rank: train once per override list, in order. Returns this rank's view."""
    from training.config import load_config
    from training.loop import train

    results = [train(load_config(None, overrides)) for overrides in runs]
    return {
        "rank": int(os.environ["RANK"]),
        "steps": [r["steps"] for r in results],
        "test_accuracy": [r["test_accuracy"] for r in results],
    }


def _sleep_forever(_: object) -> None:
    time.sleep(3600)


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value() -> None:
    # Rank processes cannot import this test module by name; ship its functions by value.
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Rank 0 gets 128 samples, rank 1 gets 128: 8 steps of 16 per epoch on each.
    return blob_shards(tmp_path_factory.mktemp("blobs") / "shards", n_train=256, shards=2)


def overrides(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.shards='{shards}'",
        f"run.dir='{run_dir}'",
        "launch.num_processes=2",
        f"train.batch_size={B}",
        f"train.epochs={EPOCHS}",
        f"optim.decay={DECAY}",
        "run.plots=false",
        *extra,
    ]


def two_rank_reference(shards: Path) -> dict[str, torch.Tensor]:
    """One process, batch B = rank 0's 16 samples then rank 1's 16, plain SGD written out by hand."""
    from training.data import iter_batches, load_shard
    from training.models import build_model

    parts = [load_shard(shards, "train", r) for r in (0, 1)]
    torch.manual_seed(0)
    model = build_model("mlp784", parts[0].feature_shape, parts[0].num_classes)
    bufs = [torch.zeros_like(p) for p in model.parameters()]
    t = 0
    for epoch in range(1, EPOCHS + 1):
        streams = [iter_batches(p, B // 2, shuffle=True, seed=0, epoch=epoch, drop_last=True) for p in parts]
        for (x0, y0), (x1, y1) in zip(*streams, strict=True):
            x, y = torch.cat([x0, x1]), torch.cat([y0, y1])
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            lr = 0.01 / (1 + DECAY * t)
            with torch.no_grad():
                for p, b in zip(model.parameters(), bufs, strict=True):
                    b.mul_(0.9).add_(p.grad)
                    p.sub_(lr * (p.grad + 0.9 * b))
            t += 1
    return {k: v.detach() for k, v in model.state_dict().items()}


def one_process_accuracy(shards: Path, state: dict[str, torch.Tensor]) -> float:
    from training.data import load_shard
    from training.models import build_model

    data = load_shard(shards, "test")
    model = build_model("mlp784", data.feature_shape, data.num_classes)
    model.load_state_dict(state)
    with torch.no_grad():
        return int((model(data.features).argmax(1) == data.labels).sum()) / len(data)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def test_ddp_fsdp_and_resume_on_two_ranks(spark, shards: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import launch
    from training.checkpoint import load_model_state

    runs = [
        overrides(shards, tmp_path / "ddp", "train.strategy=ddp"),
        overrides(shards, tmp_path / "fsdp", "train.strategy=fsdp"),
        overrides(shards, tmp_path / "part", "train.strategy=ddp", "train.epochs=1"),
        overrides(shards, tmp_path / "part", "train.strategy=ddp", "run.resume=true"),
    ]
    out = launch(_rank_runs, runs, num_processes=2, local_mode=True, timeout_s=180)
    assert out["rank"] == 0  # rank 0's result, not whichever rank finished last
    assert out["steps"] == [16, 16, 8, 16]

    ddp = load_model_state(tmp_path / "ddp" / "checkpoint.pt")
    # DDP (2 x 16) == one process with batch 32 on the same samples; float32 sums in another order.
    assert_same_state(ddp, two_rank_reference(shards), atol=1e-5)
    # FSDP2 shards parameters, gradients and optimizer state but computes the same update.
    assert_same_state(load_model_state(tmp_path / "fsdp" / "checkpoint.pt"), ddp, atol=1e-5)
    # Stopped after epoch 1 and resumed == uninterrupted, bit for bit on CPU.
    assert_same_state(load_model_state(tmp_path / "part" / "checkpoint.pt"), ddp, atol=0)
    # Test accuracy evaluated across two ranks == a one-process count with the saved weights.
    assert out["test_accuracy"][0] == pytest.approx(one_process_accuracy(shards, ddp))
    assert out["test_accuracy"][1] == pytest.approx(
        one_process_accuracy(shards, load_model_state(tmp_path / "fsdp" / "checkpoint.pt"))
    )


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_rank1_failure_surfaces_in_local_mode(spark, shards: Path, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import RankFailure, launch
    from training.config import load_config
    from training.loop import train

    cfg = load_config(
        None,
        overrides(
            shards, tmp_path / "run", "fault.fail_rank=1", "fault.fail_at_step=3", f"fault.mode={mode}"
        ),
    )
    with pytest.raises(RankFailure) as info:
        launch(train, cfg, num_processes=2, local_mode=True, timeout_s=120)
    assert info.value.rank == 1
    if mode == "raise":
        assert "InjectedFault" in info.value.tail and "rank 1 fails at step 3" in info.value.tail
    else:
        assert "without a Python traceback" in str(info.value)


def test_rank1_failure_surfaces_in_distributed_mode_via_cli(  # type: ignore[no-untyped-def]
    spark, shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_jobs.train import main

    sets = overrides(
        shards, tmp_path / "run", "launch.local_mode=false", "fault.fail_rank=1", "fault.fail_at_step=2"
    )
    argv = [x for s in sets for x in ("--set", s)]
    assert main(spark_args(*argv)) == 1
    err = capsys.readouterr().err
    assert "rank 1 failed" in err and "InjectedFault" in err


def test_script_launch_failure_and_success(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import RankFailure, launch_script

    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "if os.environ['RANK'] == sys.argv[1]:\n"
        "    raise SystemExit('rank ' + sys.argv[1] + ' gives up')\n"
    )
    with pytest.raises(RankFailure) as info:
        launch_script(script, ["1"], num_processes=2, local_mode=True, timeout_s=120)
    assert info.value.rank == 1 and "gives up" in info.value.tail
    assert launch_script(script, ["7"], num_processes=2, local_mode=True, timeout_s=120) is None


def test_hang_is_bounded_by_the_timeout(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.launch import LaunchTimeout, launch

    launch_dir = tmp_path / "launch"
    with pytest.raises(LaunchTimeout, match=r"launch\.timeout_s"):
        launch(_sleep_forever, None, num_processes=2, local_mode=True, timeout_s=8, launch_dir=launch_dir)
    pids = [int(p.read_text().split()[0]) for p in launch_dir.glob("rank-*.pid")]
    assert len(pids) == 2
    time.sleep(0.5)
    for pid in pids:  # the ranks were killed, not left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_ranks_import_what_the_driver_put_on_sys_path(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A function from a module the driver found only through sys.path (as --py-files, a notebook
    directory or a script's own folder provide), by reference and by name."""
    from spark_jobs.launch import launch

    code = tmp_path / "driver_only_code"
    code.mkdir()
    (code / "driver_only_mod.py").write_text(
        "import os\n\ndef rank_and_square(x):\n    return (int(os.environ['RANK']), x * x)\n"
    )
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    import driver_only_mod  # type: ignore[import-not-found]

    assert launch(driver_only_mod.rank_and_square, 7, num_processes=2, timeout_s=120) == (0, 49)
    assert launch("driver_only_mod:rank_and_square", 3, num_processes=2, timeout_s=120) == (0, 9)
