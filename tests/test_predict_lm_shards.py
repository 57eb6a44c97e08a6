"""``spark-collab predict`` on a GPT run: token shards scored in place, and ``--generate``.

Both against single-process references computed here with the same code paths a user would call
without Spark (``training.inference.document_loss``, ``training.lm_sample``), compared exactly.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import spark_args
from gpt_shards import TEXT, char_shards, gpt_overrides

from contracts.manifest import Manifest
from contracts.tokenizer import CharTokenizer, Tokenizer, load_tokenizer
from contracts.tokens import DTYPES, OFFSET_DTYPE, TOKENIZER_FILE, token_dtype_for, write_token_shard
from spark_jobs.predict import PredictOptions, main, predict

PARAGRAPHS = TEXT.split("\n\n")
# Documents per shard of the val split: several per shard, one longer than two 16-token windows,
# one empty (its range is the end-of-document id alone).
VAL_SHARDS = [PARAGRAPHS[:3], ["", PARAGRAPHS[3], TEXT[:70]], [PARAGRAPHS[4]]]
PROMPTS = {10: "First", 3: "All:\n", 7: "", 4: None, 12: "Speak \u00a7 speak", 0: "You are all resolved"}
MALFORMED_PROMPTS = [4, 12]  # null, and a character outside the char vocabulary


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained GPT run and the token shards it trained on."""
    from training.config import load_config
    from training.dist import distributed
    from training.lm_loop import run_training

    root = tmp_path_factory.mktemp("predict-lm-shards")
    shards = char_shards(root / "shards")
    run = root / "run"
    with distributed() as ctx:
        run_training(load_config(None, gpt_overrides(shards, run)), ctx)
    return run, shards


def corpus_shards(root: Path, tokenizer: Tokenizer, splits: dict[str, list[list[str]]]) -> Path:
    """Token shards laid out as ``spark-collab corpus`` writes them: every document's ids followed
    by one end-of-document id; ``splits[split][i]`` lists the documents of shard i."""
    dtype = token_dtype_for(tokenizer.vocab_size)
    entries: dict[str, dict] = {}
    for split, shards in splits.items():
        written = []
        for index, docs in enumerate(shards):
            encoded = [[*tokenizer.encode(doc), tokenizer.eot_id] for doc in docs]
            tokens = np.array([i for ids in encoded for i in ids], dtype=np.int64)
            written.append(
                write_token_shard(root, split, index, tokens, np.array([len(e) for e in encoded]), dtype)
            )
        entries[split] = {"shards": written}
    Manifest(
        kind="tokens",
        splits=entries,
        extra={
            "vocab_size": tokenizer.vocab_size,
            "token_dtype": dtype,
            "tokenizer": {"kind": tokenizer.kind, "file": TOKENIZER_FILE, "sha256": tokenizer.sha256()},
        },
    ).write(root)
    tokenizer.save(root / TOKENIZER_FILE)
    return root


def reference_shard_scores(run: Path, shards: Path, split: str) -> list[tuple[int, float]]:
    """(tokens, loss_sum) of every document of ``split``, in order, read with numpy alone."""
    from training.inference import document_loss, load_language_model

    lm = load_language_model(run)
    manifest = json.loads((shards / "manifest.json").read_text())
    dtype = DTYPES[manifest["token_dtype"]]
    scores = []
    for entry in manifest["splits"][split]["shards"]:
        tokens = np.fromfile(shards / entry["path"], dtype=dtype)
        offsets = np.fromfile(shards / entry["index_path"], dtype=OFFSET_DTYPE)
        for start, end in itertools.pairwise(offsets):
            ids = tokens[start : end - 1]  # without the document's closing end-of-document id
            scores.append(document_loss(lm.model, ids.tolist(), lm.tokenizer.eot_id))
    return scores


def test_token_shards_are_scored_as_the_reference_at_any_partitioning(
    spark, gpt_run, one_torch_thread, tmp_path: Path
) -> None:
    run, train_shards = gpt_run
    shards = corpus_shards(tmp_path / "corpus", load_tokenizer(train_shards), {"val": VAL_SHARDS})
    outputs = []
    for partitions in (1, 3):
        out = tmp_path / f"p{partitions}"
        opts = PredictOptions(
            run=str(run),
            input=str(shards),
            output=str(out),
            split="val",
            batch_size=16,
            partitions=partitions,
        )
        summary = predict(spark, opts)
        assert summary.rows == sum(len(docs) for docs in VAL_SHARDS) and summary.bad_rows == 0
        outputs.append(pq.read_table(out / "predictions").sort_by("id").to_pylist())
    assert outputs[0] == outputs[1]
    reference = reference_shard_scores(run, shards, "val")
    documents = [doc for docs in VAL_SHARDS for doc in docs]
    assert [row["id"] for row in outputs[0]] == list(range(len(documents)))
    for row, (tokens, loss), doc in zip(outputs[0], reference, documents, strict=True):
        assert row["tokens"] == tokens == len(doc)
        assert row["loss_sum"] == loss
        if tokens:
            assert row["perplexity"] == pytest.approx(math.exp(loss / tokens), rel=1e-12)
        else:
            assert row["mean_loss"] is None and row["perplexity"] is None
    report = json.loads((tmp_path / "p3" / "report.json").read_text())
    total_tokens, total_loss = sum(t for t, _ in reference), sum(loss for _, loss in reference)
    assert report["split"] == "val" and report["tokens"] == total_tokens and report["bad_rows"] == 0
    assert report["corpus_perplexity"] == pytest.approx(math.exp(total_loss / total_tokens), rel=1e-12)


def reference_completion(run: Path, prompt: str, row_id: int, seed: int, **settings) -> tuple[str, int]:
    """The completion ``spark-collab generate``'s sampling gives the row ``row_id``."""
    import torch

    from training.lm_sample import load_run, prompt_ids, sample_ids, sample_text

    trained = load_run(run)
    row_seed = int(np.random.SeedSequence([seed, row_id]).generate_state(1)[0])
    ids = prompt_ids(trained.tokenizer, prompt)
    new = sample_ids(trained.model, ids, generator=torch.Generator().manual_seed(row_seed), **settings)
    completion = trained.tokenizer.decode(new)
    # The char tokenizer round-trips, so generate's whole text is the prompt and this completion.
    assert sample_text(trained, prompt, seed=row_seed, **settings) == prompt + completion
    return completion, len(new)


def write_prompts(path: Path) -> Path:
    table = pa.table(
        {"id": pa.array(list(PROMPTS), pa.int64()), "text": pa.array(list(PROMPTS.values()), pa.string())}
    )
    pq.write_table(table, path)
    return path


def test_generated_completions_equal_the_reference_at_any_partitioning(
    spark, gpt_run, one_torch_thread, tmp_path: Path
) -> None:
    run, _ = gpt_run
    prompts = write_prompts(tmp_path / "prompts.parquet")
    settings = {"max_new_tokens": 20, "temperature": 0.9, "top_k": 10}  # 20 > block 16: the window slides
    outputs = []
    for partitions in (1, 3):
        out = tmp_path / f"g{partitions}"
        opts = PredictOptions(
            run=str(run),
            input=str(prompts),
            output=str(out),
            batch_size=16,
            partitions=partitions,
            generate=True,
            seed=5,
            **settings,
        )
        summary = predict(spark, opts)
        assert summary.generated and summary.rows == len(PROMPTS) and summary.bad_rows == 2
        outputs.append(pq.read_table(out / "predictions").sort_by("id").to_pylist())
    assert outputs[0] == outputs[1]
    for row in outputs[0]:
        assert row["prompt"] == PROMPTS[row["id"]]
        if row["id"] in MALFORMED_PROMPTS:
            assert row["completion"] is None and row["new_tokens"] is None
            continue
        completion, new_tokens = reference_completion(run, row["prompt"], row["id"], 5, **settings)
        assert (row["completion"], row["new_tokens"]) == (completion, new_tokens)
        assert new_tokens == 20
    completions = [row["completion"] for row in outputs[0] if row["completion"] is not None]
    assert len(set(completions)) == len(completions)  # each row has its own generator
    report = json.loads((tmp_path / "g3" / "report.json").read_text())
    assert report["rows"] == len(PROMPTS) and report["bad_row_ids"] == MALFORMED_PROMPTS
    assert report["generate"] == {**settings, "seed": 5}


def run_cli(capsys, *argv: str) -> str:
    """The one error line of a job that must stop with exit 2."""
    assert main([*argv, *spark_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_are_one_line_errors_and_write_nothing(spark, gpt_run, tmp_path: Path, capsys) -> None:
    run, train_shards = gpt_run
    out = tmp_path / "out"
    common = ["--run", str(run), "--output", str(out)]

    foreign = corpus_shards(tmp_path / "foreign", CharTokenizer.train(["xyz"]), {"val": [["xy"]]})
    err = run_cli(capsys, *common, "--input", str(foreign), "--split", "val")
    vocab = load_tokenizer(train_shards).vocab_size
    assert "vocab 4" in err and f"vocab {vocab}" in err and "the run's tokenizer" in err

    # The default --split is test (image shards); token shards name their splits and suggest val.
    assert "pass --split val" in run_cli(capsys, *common, "--input", str(train_shards))
    err = run_cli(capsys, *common, "--input", str(train_shards), "--split", "nope")
    assert "'nope'" in err and "train, val" in err
    assert "--generate" in run_cli(
        capsys, *common, "--input", str(train_shards), "--split", "val", "--generate"
    )

    prompts = write_prompts(tmp_path / "prompts.parquet")
    assert "only used with --generate" in run_cli(
        capsys, *common, "--input", str(prompts), "--temperature", "1"
    )
    assert "--top-k" in run_cli(capsys, *common, "--input", str(prompts), "--generate", "--top-k", "-1")
    err = run_cli(capsys, *common, "--input", str(prompts), "--generate", "--bad-rows", "fail")
    assert "ids 4, 12" in err

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "result.json").write_text(json.dumps({"config": {"model": {"name": "mlp"}}}))
    err = run_cli(
        capsys, "--run", str(classifier), "--output", str(out), "--input", str(prompts), "--generate"
    )
    assert "classifier run" in err
    assert not out.exists()
