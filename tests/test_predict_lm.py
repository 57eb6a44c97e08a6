"""``spark-collab predict`` on a GPT run: per-document scores against a single-process reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import spark_args
from gpt_shards import TEXT, char_shards, gpt_overrides

from contracts.tokenizer import load_tokenizer
from spark_jobs.predict import PredictOptions, main, predict

DOCS = [
    TEXT[:40],  # more than one 16-token window
    TEXT[40:49],  # less than one window
    TEXT[100:148],  # exactly three windows
    "",  # no tokens: counted, no loss
    None,  # null document: malformed
    "Speak \u00a7 speak",  # a character outside the char vocabulary: malformed
    TEXT[:40],  # a repeated document scores the same
]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from training.config import load_config
    from training.dist import distributed
    from training.lm_loop import run_training

    root = tmp_path_factory.mktemp("predict-lm")
    shards = char_shards(root / "shards")
    run = root / "run"
    with distributed() as ctx:
        run_training(load_config(None, gpt_overrides(shards, run)), ctx)
    return run, shards


def reference_scores(run: Path, shards: Path, text: str) -> tuple[int, float]:
    """Plain torch in this process: each token's -log p from its window, summed in float64."""
    from training.lm_config import GPTModelConfig
    from training.lm_loop import build_gpt

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = build_gpt(GPTModelConfig(**state["extra"]["model"]), int(state["extra"]["vocab_size"]))
    model.load_state_dict(state["model"])
    model.eval()
    tokenizer = load_tokenizer(shards)
    ids = tokenizer.encode(text)
    seq = [tokenizer.eot_id, *ids]
    block = model.shape.block_size
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ids), block):
            window = seq[start : min(start + block, len(ids)) + 1]
            logits, _ = model(torch.tensor([window[:-1]]))
            logp = F.log_softmax(logits[0].float(), dim=-1)
            total += sum(-float(logp[i, t]) for i, t in enumerate(window[1:]))
    return len(ids), total


def write_docs(path: Path) -> Path:
    table = pa.table({"id": pa.array(range(len(DOCS)), pa.int64()), "text": pa.array(DOCS, pa.string())})
    pq.write_table(table, path)
    return path


def test_document_scores_match_the_reference_at_any_partitioning(spark, gpt_run, tmp_path: Path) -> None:
    run, shards = gpt_run
    data = write_docs(tmp_path / "docs.parquet")
    outputs = []
    for partitions in (1, 3):
        out = tmp_path / f"p{partitions}"
        opts = PredictOptions(
            run=str(run), input=str(data), output=str(out), batch_size=16, partitions=partitions
        )
        summary = predict(spark, opts)
        assert summary.rows == len(DOCS) and summary.bad_rows == 2
        outputs.append(pq.read_table(out / "predictions").sort_by("id").to_pylist())
    assert outputs[0] == outputs[1]
    rows = outputs[0]
    total_tokens, total_loss = 0, 0.0
    for row, text in zip(rows, DOCS, strict=True):
        if text is None or "\u00a7" in text:
            assert row["tokens"] is None and row["perplexity"] is None
            continue
        tokens, loss = reference_scores(run, shards, text)
        total_tokens, total_loss = total_tokens + tokens, total_loss + loss
        assert row["tokens"] == tokens == len(text)
        if tokens == 0:
            assert row["mean_loss"] is None and row["perplexity"] is None
            continue
        assert row["loss_sum"] == pytest.approx(loss, rel=1e-6)
        assert row["mean_loss"] == pytest.approx(loss / tokens, rel=1e-6)
        assert row["perplexity"] == pytest.approx(math.exp(loss / tokens), rel=1e-6)
    assert rows[0]["loss_sum"] == rows[6]["loss_sum"]
    report = json.loads((tmp_path / "p3" / "report.json").read_text())
    assert report["tokens"] == total_tokens and report["bad_row_ids"] == [4, 5]
    assert report["corpus_perplexity"] == pytest.approx(math.exp(total_loss / total_tokens), rel=1e-6)


def test_jsonl_and_text_files_are_documents_too(spark, gpt_run, tmp_path: Path) -> None:
    run, shards = gpt_run
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(DOCS[:3])))
    out = tmp_path / "j"
    predict(
        spark, PredictOptions(run=str(run), input=str(jsonl), output=str(out), text_col="body", batch_size=16)
    )
    rows = pq.read_table(out / "predictions").sort_by("id").to_pylist()
    assert [r["tokens"] for r in rows] == [len(t) for t in DOCS[:3]]
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text(DOCS[2])
    predict(spark, PredictOptions(run=str(run), input=str(texts), output=str(tmp_path / "t"), batch_size=16))
    (row,) = pq.read_table(tmp_path / "t" / "predictions").to_pylist()
    assert row["tokens"] == len(DOCS[2])
    assert row["loss_sum"] == pytest.approx(reference_scores(run, shards, DOCS[2])[1], rel=1e-6)


def test_malformed_documents_fail_the_job_when_asked(spark, gpt_run, tmp_path: Path, capsys) -> None:
    run, _ = gpt_run
    data = write_docs(tmp_path / "docs.parquet")
    out = tmp_path / "out"
    argv = ["--run", str(run), "--input", str(data), "--output", str(out), "--bad-rows", "fail"]
    assert main([*argv, *spark_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ids 4, 5" in err[0]
    assert not out.exists()
    assert main(["--run", str(run), "--input", str(data), "--output", str(out), "--fusion", "ensemble"]) == 2
    assert "drop --fusion" in capsys.readouterr().err
    assert (
        main(["--run", str(run), "--input", str(data), "--output", str(out), "--ship-model", *spark_args()])
        == 2
    )
    assert "drop --ship-model" in capsys.readouterr().err
    assert not out.exists()
