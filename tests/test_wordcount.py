"""Word count end to end, against a plain-Python Counter reference written here from the spec."""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import rjieba
from conftest import REPO_ROOT, spark_args

from spark_jobs import wordcount
from spark_jobs.wordcount import engines
from spark_jobs.wordcount.inputs import resolve_inputs
from spark_jobs.wordcount.job import count_files, count_words
from spark_jobs.wordcount.options import WordCountOptions

# ------------------------------------------------------------------ reference (independent of the job)

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"


def ref_tokens(line: str, tokenizer: str) -> list[str]:
    if tokenizer == "whitespace":
        return line.split()
    words = re.findall(r"\w+", line.lower())
    if tokenizer == "words":
        return words
    out: list[str] = []
    for word in words:
        for run in re.findall(f"[{HAN}]+|[^{HAN}]+", word):
            out += rjieba.cut(run) if re.match(f"[{HAN}]", run) else [run]
    return out


def ref_count(blobs: list[bytes], tokenizer: str) -> tuple[Counter[str], int]:
    """Counter over files given as raw (decompressed) bytes, and the number of invalid lines."""
    counts: Counter[str] = Counter()
    bad = 0
    for blob in blobs:
        for raw in re.split(rb"\r\n|\r|\n", blob):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
                line = raw.decode("utf-8", errors="replace")
            # Spec: a BOM at the start of a line (a file's first line, or a concatenated file's) is dropped.
            counts.update(ref_tokens(line.removeprefix("\ufeff"), tokenizer))
    return counts, bad


def read_output(path: Path, fmt: str = "parquet") -> dict[str, int]:
    if fmt == "parquet":
        table = ds.dataset(path, format="parquet").to_table()
        assert str(table.schema.field("word").type) == "string"
        assert str(table.schema.field("count").type) == "int64"
        rows = zip(table.column("word").to_pylist(), table.column("count").to_pylist(), strict=True)
    elif fmt == "csv":
        rows = []
        for part in sorted(path.glob("part-*")):
            with open(part, newline="", encoding="utf-8") as handle:
                rows += [(r["word"], int(r["count"])) for r in csv.DictReader(handle)]
    else:
        rows = [
            (rec["word"], rec["count"])
            for part in sorted(path.glob("part-*"))
            for rec in map(json.loads, part.read_text(encoding="utf-8").splitlines())
        ]
    result: dict[str, int] = {}
    for word, count in rows:
        assert word not in result, f"{word!r} appears twice"
        result[word] = count
    return result


# ------------------------------------------------------------------ generated input


def _tricky_text() -> bytes:
    import random

    rng = random.Random(7)
    pieces = ["Hello", "wörld", "ÉCOLE", "straße", "naïve", "日本語", "中文分词很好", "x_y", "42", "Σίσυφος",
              "it's", "e.g.", "Ⅻ", "٣٤", "emoji😀", "ﬁne", "İstanbul", "ΟΔΟΣ"]  # fmt: skip
    spaces = [" ", "  ", "\t", "\u00a0", "\u2003", "\x0b", "\x0c", "\x1c", "\u3000", "\x85", " , "]
    lines = []
    for i in range(400):
        n = rng.randint(0, 12)
        line = "".join(rng.choice(pieces) + rng.choice(spaces) for _ in range(n))
        lines.append(line)
        if i % 50 == 0:
            lines.append("")
    lines.append(" ".join(pieces[i % len(pieces)] for i in range(30_000)))  # one very long line
    body = "\r\n".join(lines[:200]) + "\n" + "\n".join(lines[200:]) + "\r\n"
    return "\ufeff".encode() + body.encode("utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[str], list[bytes]]:
    """Files of every kind the job accepts, and their decompressed bytes for the reference."""
    root = tmp_path_factory.mktemp("wc-corpus")
    tricky = _tricky_text()
    invalid = (
        b"good line\nbad \xff\xfe bytes\xe4\xb8 here\n\xef\xbb\xbfnot a bom at line 3\nok \xed\xa0\x80 end\n"
    )
    extra = "second file, with a gzip\n中文 text".encode()
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "tricky.txt").write_bytes(tricky)
    (root / "dir" / "invalid.txt").write_bytes(invalid)
    (root / "dir" / "sub" / "extra.txt.gz").write_bytes(gzip.compress(extra))
    (root / "dir" / "_SUCCESS").write_bytes(b"")  # bookkeeping files are skipped
    (root / "more.bz2").write_bytes(bz2.compress(tricky[3:200]))
    inputs = [str(root / "tricky.txt"), str(root / "dir"), str(root / "*.bz2")]
    return inputs, [tricky, invalid, extra, tricky[3:200]]


# ------------------------------------------------------------------ engines


@pytest.mark.parametrize(
    ("engine", "tokenizer"),
    [
        ("arrow", "whitespace"),
        ("arrow-reader", "whitespace"),
        ("arrow", "words"),
        ("arrow", "cjk"),
        ("rdd", "words"),
        ("dataframe", "whitespace"),
        ("dataframe", "words"),
    ],
)
def test_engines_match_reference(spark, corpus, tmp_path, monkeypatch, engine, tokenizer) -> None:
    if engine == "arrow-reader":
        # The route taken for paths Python cannot open (hdfs://...): lines from Spark's text reader.
        monkeypatch.setitem(engines.COUNTERS, "arrow", functools.partial(engines.count_arrow, direct=False))
        engine = "arrow"
    inputs, blobs = corpus
    files = resolve_inputs(inputs)
    assert len(files) == 4
    expected, bad = ref_count(blobs, tokenizer)
    options = WordCountOptions(tmp_path / "out", inputs, tokenizer=tokenizer, engine=engine, top=5)
    result = count_words(spark, options)
    assert read_output(tmp_path / "out") == dict(expected)
    assert result.invalid_lines == bad == 2
    assert result.total_tokens == sum(expected.values())
    assert result.distinct_words == len(expected)
    assert result.top == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert "not" in expected and not any(w.startswith("\ufeff") for w in expected)


def test_failed_job_leaves_nothing(spark, tmp_path) -> None:
    out = tmp_path / "out"
    # A file that vanished after the inputs were checked: Spark's read fails mid-job.
    with pytest.raises(Exception, match=r"(?i)does not exist|no such file"):
        count_files(spark, [str(tmp_path / "vanished.txt")], WordCountOptions(out))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ CLI


def test_cli_demo_prints_top_words(spark, tmp_path, capsys) -> None:
    from spark_jobs.demo.text import demo_text

    out = tmp_path / "demo"
    assert wordcount.main([*spark_args(), "--demo", "--output", str(out), "--top", "4"]) == 0
    expected = Counter(re.findall(r"\w+", demo_text().lower()))
    printed = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert [(w, int(c)) for c, w in printed] == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    assert read_output(out) == dict(expected)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_formats_and_min_count(spark, corpus, tmp_path, fmt) -> None:
    inputs, blobs = corpus
    out = tmp_path / fmt
    argv = [
        *spark_args(),
        *inputs,
        "--output",
        str(out),
        "--format",
        fmt,
        "--min-count",
        "3",
        "--tokenizer",
        "words",
    ]
    assert wordcount.main(argv) == 0
    expected, _ = ref_count(blobs, "words")
    assert read_output(out, fmt) == {w: c for w, c in expected.items() if c >= 3}
    # An existing output is replaced only with --overwrite.
    assert wordcount.main([*argv, "--overwrite", "--min-count", "1"]) == 0
    assert read_output(out, fmt) == dict(expected)


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "empty.gz").write_bytes(gzip.compress(b""))
    (tmp / "emptydir").mkdir()
    (tmp / "existing").mkdir()
    (tmp / "existing" / "keep.txt").write_text("old result")
    (tmp / "ok.txt").write_text("some words\n")
    out = str(tmp / "out")
    return [
        ([str(tmp / "missing.txt"), "--output", out], f"input {tmp / 'missing.txt'}: no such file"),
        ([str(tmp / "nomatch*.txt"), "--output", out], f"input {tmp / 'nomatch*.txt'}: no file matches"),
        ([str(tmp / "empty.txt"), "--output", out], f"input {tmp / 'empty.txt'}: empty input"),
        ([str(tmp / "empty.gz"), "--output", out], f"input {tmp / 'empty.gz'}: empty input"),
        ([str(tmp / "emptydir"), "--output", out], f"input {tmp / 'emptydir'}: directory holds no files"),
        (
            [str(tmp / "ok.txt"), "--output", str(tmp / "existing")],
            f"--output {tmp / 'existing'} already exists",
        ),
        (["--output", out], "no input given"),
        ([str(tmp / "ok.txt"), "--demo", "--output", out], "--demo counts the embedded text"),
    ]


def test_bad_inputs_one_line_exit_2_nothing_written(tmp_path, capsys) -> None:
    for argv, message in _bad_cases(tmp_path):
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        assert wordcount.main([*argv, "--master", "local[1]"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, (message, err)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert (tmp_path / "existing" / "keep.txt").read_text() == "old result"


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def test_python_m_spark_jobs_subprocess(corpus, tmp_path) -> None:
    inputs, blobs = corpus
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spark_jobs", "wordcount", *spark_args(), inputs[0], "--output", str(out),
           "--tokenizer", "whitespace", "--engine", "rdd", "--top", "3"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected, _ = ref_count(blobs[:1], "whitespace")
    assert read_output(out) == dict(expected)
    top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert proc.stdout.split("\n")[:3] == [f"{c:>12}  {w}" for w, c in top]
    assert "job" in proc.stderr and "session start" in proc.stderr


def test_spark_submit_end_to_end(corpus, tmp_path) -> None:
    spark_submit = Path(sys.executable).parent / "spark-submit"
    if not spark_submit.exists():
        pytest.skip("spark-submit not installed next to this interpreter")
    inputs, blobs = corpus
    out = tmp_path / "out"
    cmd = [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           str(REPO_ROOT / "spark_jobs" / "wordcount" / "cli.py"), inputs[1], "--output", str(out), "--format", "json"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected, bad = ref_count(blobs[1:3], "words")
    assert read_output(out, "json") == dict(expected)
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert f"warning: {bad} line(s) held invalid UTF-8" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ real texts (../shared/data)


@pytest.mark.shared
@pytest.mark.parametrize(
    ("relative", "tokenizer"),
    [
        ("tinyshakespeare/input.txt", "words"),
        ("gutenberg-moby-dick/2701-0.txt", "whitespace"),
        ("chinese-classics/hongloumeng.txt", "cjk"),
    ],
)
def test_shared_texts(spark, shared_data, tmp_path, relative, tokenizer) -> None:
    path = shared_data / relative
    raw = path.read_bytes()
    if relative.startswith("gutenberg"):
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the traps this file exists to test
    expected, bad = ref_count([raw], tokenizer)
    result = count_words(spark, WordCountOptions(tmp_path / "out", [str(path)], tokenizer=tokenizer, top=3))
    assert read_output(tmp_path / "out") == dict(expected)
    assert (result.total_tokens, result.distinct_words, result.invalid_lines) == (
        sum(expected.values()),
        len(expected),
        bad,
    )
    print(f"{relative} [{tokenizer}]: {result.total_tokens} tokens, {result.distinct_words} distinct, "
          f"{result.seconds:.1f} s, top {result.top}")  # fmt: skip
