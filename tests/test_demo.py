"""``spark-collab demo`` at a tiny size, its summary checked against independent references."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import spark_args

from spark_jobs.demo import job as demo
from spark_jobs.demo.text import demo_text


def test_demo_text_is_cpythons_documentation() -> None:
    from pydoc_data.topics import topics

    text = demo_text()
    assert len(text) > 400_000
    for name in ("assert", "with", "lambda"):
        assert topics[name].strip("\n") in text


@pytest.mark.distributed
@pytest.mark.timeout(2400)  # five jobs and two launches; at load 30 it took over 15 minutes
def test_tiny_demo_summary_matches_references(
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.checkpoint import load_model_state
    from training.data import load_shard
    from training.models import build_model

    out = tmp_path / "demo"
    args = demo.build_parser().parse_args(
        ["--output", str(out), "--epochs", "2", "--gpt-iters", "4", *spark_args()]
    )
    result = demo.run_demo(args)
    printed = capsys.readouterr().out

    # Word count: a plain-Python count of the same text with the `words` tokenizer's rule.
    reference = Counter(re.findall(r"\w+", demo_text().lower()))
    assert result.tokens == sum(reference.values()) and result.distinct_words == len(reference)
    assert result.top_words == sorted(reference.items(), key=lambda kv: (-kv[1], kv[0]))[: demo.TOP_WORDS]
    assert result.top_words[0] == ("the", reference["the"])

    # Sharding: mnist5k's 5,000 digits split 80/10/10.
    assert result.split_rows == {"train": 4000, "val": 500, "test": 500}

    # Training: the reported test accuracy is what the checkpoint's weights score in a plain module.
    test = load_shard(out / "shards" / "mnist5k", "test")
    model = build_model("mlp784", test.feature_shape, test.num_classes)
    model.load_state_dict(load_model_state(out / "train" / "mlp784" / "checkpoint.pt"))
    with torch.no_grad():
        correct = int((model(test.features).argmax(1) == test.labels).sum())
    assert result.train["test_accuracy"] == pytest.approx(correct / len(test))
    assert result.train["world_size"] == 2 and result.train["epochs"] == 2

    # The summary says all of it.
    summary = printed[printed.index("=== demo summary") :]
    assert f"tokens: {result.tokens}" in summary and f"distinct: {result.distinct_words}" in summary
    assert "top: the " in summary and "train 4000, val 500, test 500" in summary
    assert f"test accuracy: {result.train['test_accuracy']:.4f} on 500 digits" in summary
    assert str(out / "train" / "mlp784") in summary
    if result.gpt_skipped:
        assert f"GPT: left out ({result.gpt_skipped})" in summary
    else:
        assert result.gpt is not None and result.gpt["iters"] == 4
        assert result.gpt_sample.strip()  # 4 iterations: characters, not words yet
        assert "GPT training" in summary and repr(result.gpt_sample) in summary
