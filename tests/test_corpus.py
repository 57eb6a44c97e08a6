"""The corpus job end to end on Spark: counts against plain-Python references, reruns, bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import spark_args

from contracts.manifest import Manifest
from contracts.tokenizer import load_tokenizer
from contracts.tokens import open_token_shard
from spark_jobs.corpus import CorpusOptions, DocSpec, TokenizerSpec, main, run_corpus

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog.\nIt was the best of times.",
    "Call me Ishmael. Some years ago, never mind how long precisely.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune.",
    "Über Straße naïve café — the fox again, the dog again.",
    "Whan that Aprille with his shoures soote the droghte of March hath perced to the roote.",
    "In the beginning God created the heaven and the earth. And the earth was without form.",
]


def write_corpus(root: Path) -> list[str]:
    """Two files (one with BOM and CRLF); returns the paragraphs as a reader of the files sees them."""
    root.mkdir(parents=True, exist_ok=True)
    first = "\n\n".join(PARAGRAPHS[:3] * 2) + "\n"  # each paragraph twice: exact duplicates
    second = "\ufeff" + "\r\n\r\n".join(p.replace("\n", "\r\n") for p in PARAGRAPHS[3:]) + "\r\n"
    (root / "a.txt").write_text(first, encoding="utf-8")
    (root / "b.txt").write_bytes(second.encode("utf-8"))
    return PARAGRAPHS[:3] * 2 + PARAGRAPHS[3:]


def shard_documents(out: Path) -> list[list[int]]:
    manifest = Manifest.read(out, kind="tokens")
    docs = []
    for split in ("train", "val"):
        for index in range(manifest.num_shards(split)):
            shard = open_token_shard(out, split, index, verify=True, manifest=manifest)
            docs += [
                shard.tokens[a:b].tolist()
                for a, b in zip(shard.doc_offsets[:-1], shard.doc_offsets[1:], strict=True)
            ]
    return docs


@pytest.mark.shared
def test_tinyshakespeare_char_matches_nanogpt_counts(spark, shared_data, tmp_path) -> None:
    path = shared_data / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    out = tmp_path / "ts"
    result = run_corpus(spark, [str(path)], out, CorpusOptions(val_fraction=0.0))
    chars = sorted(set(text))  # nanoGPT's prepare.py
    assert len(chars) == 65 and len(text) == 1_115_394
    tok = load_tokenizer(out)
    assert tok.kind == "char" and tok.vocab_size == 65 + 1 and tok.eot_id == 65
    [doc] = shard_documents(out)
    stoi = {c: i for i, c in enumerate(chars)}
    assert doc == [stoi[c] for c in text] + [65]
    assert result.manifest.get("token_dtype") == "uint16" and result.manifest.rows("train") == 1_115_395


def test_words_vocabulary_is_the_word_counts_top_v(spark, tmp_path) -> None:
    docs = write_corpus(tmp_path / "in")
    out = tmp_path / "words"
    options = CorpusOptions(docs=DocSpec("paragraph"), tokenizer=TokenizerSpec("words", 12), val_fraction=0.0)
    result = run_corpus(spark, [str(tmp_path / "in")], out, options)
    counts = Counter(w for d in docs for w in re.findall(r"\w+", d.lower()))
    expected = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:12]]
    tok = load_tokenizer(out)
    assert tok.words == expected and result.tokenizer.vocab_size == 14
    ids = {w: i + 2 for i, w in enumerate(expected)}
    reference = sorted([ids.get(w, 0) for w in re.findall(r"\w+", d.lower())] + [1] for d in docs)
    assert sorted(shard_documents(out)) == reference
    assert result.documents == {"read": 9, "length_filter_removed": 0, "kept": 9}


def test_bpe_with_dedup_reruns_byte_identical_and_round_trips(spark, tmp_path, capsys) -> None:
    docs = write_corpus(tmp_path / "in")
    options = CorpusOptions(
        docs=DocSpec("paragraph"),
        tokenizer=TokenizerSpec("bpe", 300),
        dedup=("exact", "minhash"),
        val_fraction=0.3,
        shards=2,
        seed=3,
    )
    first, second = tmp_path / "one", tmp_path / "two"
    result = run_corpus(spark, [str(tmp_path / "in")], first, options)
    run_corpus(spark, [str(tmp_path / "in")], second, options)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert result.documents["exact_removed"] == 3 and result.documents["kept"] == 6
    manifest = result.manifest
    assert manifest.num_shards("train") == 2 and manifest.num_shards("val") == 1
    assert manifest.split("train")["documents"] + manifest.split("val")["documents"] == 6
    tok = load_tokenizer(first)
    assert manifest.get("tokenizer")["sha256"] == tok.sha256() and tok.vocab_size == 300
    decoded = sorted(tok.decode(d) for d in shard_documents(first))
    assert decoded == sorted(set(docs)) and all(d[-1] == tok.eot_id for d in shard_documents(first))

    png = tmp_path / "lengths.png"
    assert main(["--describe", str(first), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = capsys.readouterr().out
    assert "exact removed 3" in shown and "train " in shown and "val " in shown


def test_jsonl_documents(spark, tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": p}) for i, p in enumerate(PARAGRAPHS)) + "\n")
    out = tmp_path / "j"
    options = CorpusOptions(docs=DocSpec("jsonl", "text"), val_fraction=0.0)
    result = run_corpus(spark, [str(path)], out, options)
    tok = load_tokenizer(out)
    assert sorted(tok.decode(d) for d in shard_documents(out)) == sorted(PARAGRAPHS)
    assert result.documents["kept"] == len(PARAGRAPHS)


def _fails(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*argv, "--output", str(out), *spark_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no staging left


def test_bad_input_is_one_line_exit_2_and_nothing_written(spark, tmp_path, capsys) -> None:
    write_corpus(tmp_path / "in")
    text_in = str(tmp_path / "in")
    _fails(tmp_path, capsys, [text_in, "--min-chars", "100000"], "no document left after filtering")
    distinct = len({w for p in PARAGRAPHS for w in re.findall(r"\w+", p.lower())})
    _fails(tmp_path, capsys, [text_in, "--tokenizer", "words:5000"], f"has only {distinct} distinct words")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": "also fine"}\nnot json\n')
    _fails(tmp_path, capsys, [str(jsonl), "--docs", "jsonl:text"], "in.jsonl:3: not JSON")
    _fails(tmp_path, capsys, [str(jsonl), "--docs", "jsonl:body"], "in.jsonl:1 has no field 'body'")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"]}), table)
    _fails(tmp_path, capsys, [str(table), "--docs", "parquet:text"], "has no column 'text'")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    _fails(tmp_path, capsys, [text_in], "already exists; pass --overwrite")
    assert (tmp_path / "out" / "keep").read_text() == "mine"
    _fails(tmp_path, capsys, [text_in, "--tokenizer", "bpe:12"], "needs at least 258 ids")


def test_tokens_of_every_document_are_the_tokenizers(spark, tmp_path) -> None:
    """The executors' encoding (Arrow batches, broadcast tokenizer) equals a driver-side encode."""
    from contracts.tokenizer import BpeTokenizer
    from spark_jobs.corpus.workers import TOKENS_DDL, encode_task

    texts = [p * (i + 1) for i, p in enumerate(PARAGRAPHS)] * 50
    tok = BpeTokenizer.train(iter([texts]), 320)
    frame = spark.createDataFrame(list(enumerate(texts)), "doc_id long, text string").repartition(2)
    broadcast = spark.sparkContext.broadcast(tok.to_json())
    rows = frame.mapInArrow(encode_task(broadcast, "uint16"), TOKENS_DDL).collect()
    got = {r["doc_id"]: np.frombuffer(r["tokens"], dtype="<u2").tolist() for r in rows}
    assert got == {i: [*tok.encode(t), tok.eot_id] for i, t in enumerate(texts)}


def test_a_reused_tokenizer_keeps_the_earlier_ids(spark, tmp_path, capsys) -> None:
    """``--tokenizer file:DIR`` tokenizes a new corpus with an earlier output's tokenizer, unchanged:
    the documents' ids equal that tokenizer's own encoding, done here on the driver."""
    write_corpus(tmp_path / "in")
    first = tmp_path / "first"
    run_corpus(
        spark,
        [str(tmp_path / "in")],
        first,
        CorpusOptions(tokenizer=TokenizerSpec("bpe", 300), val_fraction=0.0),
    )
    tok = load_tokenizer(first)
    new_docs = ["A fox, a dog and a café.", "Never mind how long: 42 years!"]
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "n.txt").write_text("\n\n".join(new_docs) + "\n", encoding="utf-8")
    second = tmp_path / "second"
    argv = [str(tmp_path / "new"), "--output", str(second), "--tokenizer", f"file:{first}", "--val", "0"]
    assert main([*argv, "--docs", "paragraph", *spark_args()]) == 0
    assert load_tokenizer(second).sha256() == tok.sha256()
    assert Manifest.read(second, kind="tokens").get("tokenizer")["sha256"] == tok.sha256()
    assert sorted(shard_documents(second)) == sorted([*tok.encode(d), tok.eot_id] for d in new_docs)

    chars = tmp_path / "chars"
    run_corpus(spark, [str(tmp_path / "in")], chars, CorpusOptions(val_fraction=0.0))
    (tmp_path / "greek").mkdir()
    (tmp_path / "greek" / "g.txt").write_text("The fox.\n\nΩ is not in the vocabulary.\n", encoding="utf-8")
    message = "'Ω' is not in the vocabulary; the reused tokenizer (--tokenizer file:...) cannot encode"
    _fails(tmp_path, capsys, [str(tmp_path / "greek"), "--tokenizer", f"file:{chars}"], message)
    _fails(
        tmp_path,
        capsys,
        [str(tmp_path / "greek"), "--tokenizer", f"file:{tmp_path / 'none'}"],
        "no tokenizer",
    )
