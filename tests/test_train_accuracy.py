"""Held-out accuracy, reported (not a target): mlp784 and the CNN trained on mnist5k shards with
the original article's settings (10 epochs, SGD Nesterov, global batch 128, two ranks), evaluated on the real
MNIST test set (../shared/data/mnist t10k, sharded as a separate test source).

Only a floor far above chance (10%) is asserted, to catch training that is broken outright; the
numbers are printed (run with -s) and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import spark_args

pytestmark = [pytest.mark.distributed, pytest.mark.shared]


def _train_both(runs: list[list[str]]) -> list[dict]:
    from training.config import load_config
    from training.loop import train

    keep = ("model", "strategy", "test_accuracy", "val_accuracy", "test_samples", "samples_per_s")
    return [{k: r[k] for k in keep} for r in (train(load_config(None, o)) for o in runs)]


def test_mnist5k_models_on_real_mnist_test_set(spark, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pyspark import cloudpickle

    from spark_jobs.launch import launch
    from spark_jobs.shard import main as shard

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    train_dir, test_dir = tmp_path / "mnist5k", tmp_path / "t10k"
    assert shard(spark_args("--source", "mnist5k", "--output", str(train_dir), "--shards", "2")) == 0
    t10k = f"idx:{shared_data / 'mnist' / 't10k'}"
    assert shard(spark_args("--source", t10k, "--split", "test=1", "--output", str(test_dir))) == 0

    common = [
        f"data.shards='{train_dir}'",
        f"data.test='{test_dir}'",
        "run.plots=false",
        "launch.num_processes=2",
    ]
    runs = [
        [*common, "model.name=mlp784", "train.strategy=ddp", f"run.dir='{tmp_path / 'mlp784'}'"],
        [*common, "model.name=cnn", "train.strategy=fsdp", f"run.dir='{tmp_path / 'cnn'}'"],
    ]
    results = launch(_train_both, runs, num_processes=2, local_mode=True, timeout_s=900)
    print("\n" + json.dumps(results, indent=1))
    for r in results:
        assert r["test_samples"] == 10_000
        assert r["test_accuracy"] > 0.5, r
