"""Document reading and shard planning of the corpus job, as plain functions (no Spark)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from spark_jobs.common.errors import JobInputError
from spark_jobs.corpus.documents import (
    OFFSET_BITS,
    DocumentError,
    check_parquet_column,
    task_documents,
)
from spark_jobs.corpus.options import DocSpec, parse_dedup, parse_doc_spec, parse_tokenizer_spec
from spark_jobs.corpus.shards import cut_points, plan_shards

RAW = b"\xef\xbb\xbfline one\r\nline two\r\n\r\n  \r\nsecond par\xffagraph\nstill it\n\n\nthird\rlast\n"


def docs_of(path, unit: str, start: int = 0, end: int = -1, field: str | None = None):
    return [(o, t) for _, _, o, t in task_documents(str(path), 3, start, end, DocSpec(unit, field))]


def test_lines_paragraphs_and_files_decode_like_the_word_count(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(RAW)
    # Offsets are byte offsets in the file; BOM dropped, CRLF/CR made LF, invalid bytes U+FFFD.
    assert docs_of(path, "line") == [
        (0, "line one"),
        (13, "line two"),
        (29, "second par\ufffdagraph"),
        (47, "still it"),
        (58, "third"),
        (64, "last"),
    ]
    assert docs_of(path, "paragraph") == [
        (0, "line one\nline two"),
        (29, "second par\ufffdagraph\nstill it"),
        (58, "third\nlast"),
    ]
    assert docs_of(path, "file") == [
        (0, "line one\nline two\n\n  \nsecond par\ufffdagraph\nstill it\n\n\nthird\nlast\n")
    ]
    doc_id = next(iter(task_documents(str(path), 3, 0, -1, DocSpec("line"))))[0]
    assert doc_id == 3 << OFFSET_BITS


def test_byte_ranges_share_no_line_and_miss_none(tmp_path) -> None:
    rng = np.random.default_rng(0)
    lines = ["x" * int(n) for n in rng.integers(1, 40, size=300)]
    path = tmp_path / "b.txt"
    path.write_text("\n".join(lines) + "\n")
    size = path.stat().st_size
    whole = docs_of(path, "line")
    for cut in (1, 7, 64, 500):
        pieces = []
        for start in range(0, size, cut):
            pieces += docs_of(path, "line", start, min(start + cut, size))
        assert pieces == whole
    assert [t for _, t in whole] == lines


def test_gzip_input_reads_as_plain(tmp_path) -> None:
    plain, packed = tmp_path / "c.txt", tmp_path / "c.txt.gz"
    plain.write_bytes(RAW)
    packed.write_bytes(gzip.compress(RAW))
    assert docs_of(packed, "paragraph") == docs_of(plain, "paragraph")


def test_jsonl_field_and_its_errors(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"text": "alpha", "n": 1}, {"text": None}, {"text": "beta"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert [t for _, t in docs_of(path, "jsonl", field="text")] == ["alpha", "beta"]
    with pytest.raises(DocumentError, match=r"d.jsonl:1 has no field 'body' \(it has: text, n\)"):
        docs_of(path, "jsonl", field="body")
    path.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(DocumentError, match=r"d.jsonl:2: not JSON"):
        docs_of(path, "jsonl", field="text")


def test_parquet_column(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"body": ["one", None, "three"], "n": [1, 2, 3]}), path)
    assert docs_of(path, "parquet", field="body") == [(0, "one"), (2, "three")]
    check_parquet_column([str(path)], "body")
    with pytest.raises(JobInputError, match="has no column 'text'; columns are body, n"):
        check_parquet_column([str(path)], "text")
    with pytest.raises(JobInputError, match="is int64, not a string"):
        check_parquet_column([str(path)], "n")


def test_specs_are_parsed_or_named() -> None:
    assert parse_doc_spec("jsonl:text") == DocSpec("jsonl", "text")
    assert parse_tokenizer_spec("bpe:8192").vocab == 8192
    assert parse_dedup("minhash,exact") == ("exact", "minhash")
    for bad, call in (
        ("jsonl", parse_doc_spec),
        ("bpe:100", parse_tokenizer_spec),
        ("words", parse_tokenizer_spec),
    ):
        with pytest.raises(JobInputError):
            call(bad)
    with pytest.raises(JobInputError, match="--dedup 'fuzzy'"):
        parse_dedup("fuzzy")


def test_cut_points_balance_tokens_and_leave_no_shard_empty() -> None:
    assert cut_points(np.array([10, 10, 10, 10]), 2).tolist() == [0, 2]
    assert cut_points(np.array([1000, 1, 1, 1]), 3).tolist() == [0, 1, 2]
    tokens = np.random.default_rng(1).integers(1, 100, size=1000)
    cuts = cut_points(tokens, 4)
    totals = [tokens[a:b].sum() for a, b in zip(cuts, [*cuts[1:], len(tokens)], strict=True)]
    assert max(totals) - min(totals) <= 2 * tokens.max()


def test_plan_splits_by_document_with_the_seed() -> None:
    ids = np.arange(10_000, dtype=np.int64) * 7
    tokens = np.full(len(ids), 5, dtype=np.int64)
    plan = plan_shards(ids, tokens, 0.1, 3, seed=0)
    in_val = plan.part == 3
    assert 0.08 < in_val.mean() < 0.12
    assert np.ptp(np.bincount(plan.part[~in_val])) <= 1  # equal tokens per document: equal shards
    again = plan_shards(ids, tokens, 0.1, 3, seed=0)
    other = plan_shards(ids, tokens, 0.1, 3, seed=1)
    assert np.array_equal(again.part, plan.part) and np.array_equal(again.position, plan.position)
    assert not np.array_equal(other.part == 3, in_val)
    # Positions order each split; train shards are contiguous runs of that order.
    for members in (~in_val, in_val):
        order = np.argsort(plan.position[members])
        assert sorted(plan.position[members].tolist()) == list(range(int(members.sum())))
        assert np.all(np.diff(plan.part[members][order]) >= 0)
    with pytest.raises(JobInputError, match="--shards 5: only 2 train documents"):
        plan_shards(np.array([1, 2]), np.array([3, 3]), 0.0, 5, seed=0)
    with pytest.raises(JobInputError, match="no document of 1 fell in val"):
        plan_shards(np.array([1]), np.array([3]), 1e-9, 1, seed=0)
