"""Word count benchmark: our engines against the classic Spark example, one Python thread, DuckDB, Polars.

    python bench/wordcount.py --sizes 50,200 --tokenizers whitespace,words
    python bench/wordcount.py --real            # the texts in ../shared/data, when present
    python bench/wordcount.py --whole-process --sizes 300 --repeat 3

Every tool counts the same corpus with the same tokenizer; every result is compared with the
single-threaded Counter's (a mismatch is printed and makes the exit code 1). The corpus is the
seeded Zipf text of ``spark_jobs.demo.text``, generated once per size and cached under
``runs/bench/corpus``. Spark start-up (JVM + session, and a tiny warm-up job that starts the Python
workers) is timed on its own and is not part of any job time. With ``--repeat N`` the tools take
turns, round by round, so that a busy machine slows them alike; the median is reported (the Counter
loop, the reference, runs once).

``--whole-process`` times whole commands instead, start-up included: a fresh ``spark-collab
wordcount FILE --tokenizer whitespace`` against a fresh Python running one thread of ``str.split``
and ``Counter`` over the same file (read in 16 MB blocks of whole lines, its counts pickled), wall
clock, alternating. The peers below are written here on purpose: they are the yardsticks, not part
of the product.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from operator import add
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from spark_jobs.common.session import get_spark_session  # noqa: E402
from spark_jobs.demo.text import write_zipf_corpus  # noqa: E402
from spark_jobs.wordcount import WordCountOptions, count_words  # noqa: E402
from spark_jobs.wordcount.options import ENGINES  # noqa: E402
from spark_jobs.wordcount.tokenizers import get_tokenizer  # noqa: E402

MB = 1_000_000
# DuckDB and Polars use RE2/Rust regexes; on the generated corpus (Latin letters only) this class is
# exactly Python's \w. On real texts they may differ, and the bench says so.
UNICODE_WORD = r"[\p{L}\p{N}_]+"
REAL_TEXTS = [
    ("tinyshakespeare/input.txt", "words"),
    ("tinyshakespeare/input.txt", "whitespace"),
    ("gutenberg-moby-dick/2701-0.txt", "words"),
    ("gutenberg-pride-and-prejudice/1342-0.txt", "words"),
    ("chinese-classics/hongloumeng.txt", "cjk"),
    ("chinese-classics/sanguoyanyi.txt", "cjk"),
]

Counts = dict[str, int]


# ------------------------------------------------------------------ peers


def counter_loop(path: Path, tokenizer: str) -> Counts:
    """One Python thread: read line by line, tokenize, Counter.update."""
    tokenize = get_tokenizer(tokenizer)
    counts: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace", newline=None) as handle:
        for line in handle:
            counts.update(tokenize(line))
    return dict(counts)


def classic_rdd(spark, path: Path, tokenizer: str) -> Counts:
    """Spark's examples/src/main/python/wordcount.py, with our tokenizer instead of split(' ')."""
    if tokenizer == "whitespace":
        split = str.split
    elif tokenizer == "words":
        word = re.compile(r"\w+")

        def split(line: str) -> list[str]:
            return word.findall(line.lower())

    else:
        split = get_tokenizer(tokenizer)

    lines = spark.read.text(str(path)).rdd.map(lambda r: r[0])
    return dict(lines.flatMap(split).map(lambda w: (w, 1)).reduceByKey(add).collect())


def duckdb_count(path: Path, tokenizer: str) -> Counts:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    lines = (
        "read_csv(?, columns = {'line': 'VARCHAR'}, header = false, delim = '\x01', quote = '', "
        "escape = '', auto_detect = false)"
    )
    if tokenizer == "whitespace":
        tokens = r"unnest(regexp_split_to_array(line, '\s+'))"
    else:
        tokens = f"unnest(regexp_extract_all(lower(line), '{UNICODE_WORD}'))"
    query = f"SELECT w, count(*) FROM (SELECT {tokens} AS w FROM {lines}) WHERE w <> '' GROUP BY w"
    return dict(con.execute(query, [str(path)]).fetchall())


def polars_count(path: Path, tokenizer: str) -> Counts:
    import polars as pl

    line = pl.col("line")
    tokens = (
        line.str.extract_all(r"\S+")
        if tokenizer == "whitespace"
        else line.str.to_lowercase().str.extract_all(UNICODE_WORD)
    )
    frame = (
        pl.scan_csv(path, has_header=False, separator="\x01", quote_char=None, schema={"line": pl.String})
        .select(tokens.alias("w"))
        .explode("w")
        .drop_nulls()
        .group_by("w")
        .len()
        .collect()
    )
    return dict(zip(frame["w"].to_list(), frame["len"].to_list(), strict=True))


def ours(spark, path: Path, tokenizer: str, engine: str, out: Path) -> Counts:
    import pyarrow.dataset as ds

    options = WordCountOptions(out, [str(path)], tokenizer=tokenizer, engine=engine, top=15, overwrite=True)
    count_words(spark, options)
    table = ds.dataset(out, format="parquet").to_table()
    return dict(zip(table.column("word").to_pylist(), table.column("count").to_pylist(), strict=True))


# ------------------------------------------------------------------ runner


def timed(fn: Callable[[], Counts]) -> tuple[float, Counts]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _differing(reference: Counts, result: Counts) -> int:
    return sum(1 for w in reference.keys() | result.keys() if reference.get(w) != result.get(w))


def _row(tool: str, runs: list[float], reference: Counts, result: Counts) -> dict:
    differing = _differing(reference, result)
    row = {
        "tool": tool,
        "seconds": statistics.median(runs),
        "runs": runs,
        "agrees": differing == 0,
        "differing_words": differing,
        "tokens": sum(result.values()),
        "distinct": len(result),
    }
    shown = " ".join(f"{r:.2f}" for r in runs)
    print(f"  {tool:<10} median {row['seconds']:8.2f} s (runs {shown})  "
          f"{'ok' if differing == 0 else f'DIFFERS on {differing} words'}", flush=True)  # fmt: skip
    return row


def bench_one(spark, path: Path, tokenizer: str, tools: list[str], out: Path, repeat: int) -> list[dict]:
    """Time every tool on one (corpus, tokenizer); the Counter loop is the reference for the others.

    The tools take turns round by round, so that load from other processes falls on all of them alike.
    """
    runners: dict[str, Callable[[], Counts]] = {"counter": lambda: counter_loop(path, tokenizer)}
    for tool in tools:
        if tool == "classic":
            runners[tool] = lambda: classic_rdd(spark, path, tokenizer)
        elif tool == "duckdb" and tokenizer != "cjk" and _available(tool):
            runners[tool] = lambda: duckdb_count(path, tokenizer)
        elif tool == "polars" and tokenizer != "cjk" and _available(tool):
            runners[tool] = lambda: polars_count(path, tokenizer)
        elif tool in ENGINES:
            runners[tool] = lambda tool=tool: ours(spark, path, tokenizer, tool, out)
    runs: dict[str, list[float]] = {tool: [] for tool in runners}
    results: dict[str, Counts] = {}
    for round_no in range(repeat):
        for tool, run in runners.items():
            if tool == "counter" and round_no > 0:
                continue  # the reference: once is enough
            seconds, results[tool] = timed(run)
            runs[tool].append(seconds)
    reference = results["counter"]
    return [_row(tool, runs[tool], reference, results[tool]) for tool in runners]


# ------------------------------------------------------------------ whole process

# One Python thread, the fastest plain way: big blocks of whole lines, str.split, Counter.update.
_SPLIT_COUNTER_SCRIPT = """
import pickle, sys
from collections import Counter
counts = Counter()
with open(sys.argv[1], "rb") as handle:
    while block := handle.read(16 << 20):
        block += handle.readline()
        counts.update(block.decode("utf-8", errors="replace").split())
with open(sys.argv[2], "wb") as out:
    pickle.dump(counts, out, protocol=pickle.HIGHEST_PROTOCOL)
"""


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


def _spark_collab_command() -> list[str]:
    script = Path(sys.executable).parent / "spark-collab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "spark_jobs"]


def bench_whole_process(path: Path, out: Path, master: str, repeat: int) -> list[dict]:
    """Wall clock of fresh processes, start-up included: ``spark-collab wordcount`` against one Python thread."""
    import pyarrow.dataset as ds

    out.mkdir(parents=True, exist_ok=True)
    pickled = out / "split-counter.pickle"
    commands = {
        "split+Counter": [sys.executable, "-c", _SPLIT_COUNTER_SCRIPT, str(path), str(pickled)],
        "spark-collab": [
            *_spark_collab_command(),
            "wordcount",
            str(path),
            "--output",
            str(out / "wc"),
            "--tokenizer",
            "whitespace",
            "--overwrite",
            "--master",
            master,
        ],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            runs[name].append(_wall(command))
    with open(pickled, "rb") as handle:
        reference: Counts = dict(pickle.load(handle))
    table = ds.dataset(out / "wc", format="parquet").to_table()
    ours_counts = dict(zip(table.column("word").to_pylist(), table.column("count").to_pylist(), strict=True))
    return [
        _row("split+Counter", runs["split+Counter"], reference, reference),
        _row("spark-collab", runs["spark-collab"], reference, ours_counts),
    ]


def print_table(title: str, rows: list[dict], ours_tool: str) -> None:
    base = next((r["seconds"] for r in rows if r["tool"] == ours_tool), None)
    print(f"\n{title}")
    print(f"| tool | median seconds | {ours_tool} speed-up vs tool | counts agree |")
    print("|---|---:|---:|---|")
    for r in rows:
        ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
        agree = "yes" if r["agrees"] else f"no ({r['differing_words']} words)"
        print(f"| {r['tool']} | {r['seconds']:.2f} | {ratio} | {agree} |")
    print(f"({rows[0]['tokens']} tokens, {rows[0]['distinct']} distinct)")


def _corpus_path(work: Path, size_mb: int, seed: int) -> Path:
    return work / "corpus" / f"zipf-{size_mb}mb-seed{seed}.txt"


def _ensure_corpus(path: Path, size_mb: int, seed: int) -> None:
    if not path.exists():
        started = time.perf_counter()
        write_zipf_corpus(path, size_mb * MB, seed=seed)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", flush=True)


def _main_whole_process(args: argparse.Namespace, work: Path) -> int:
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, master {args.master}, {os.cpu_count()} CPUs, whole processes"
    )
    failed = False
    all_rows = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        path = _corpus_path(work, size, args.seed)
        _ensure_corpus(path, size, args.seed)
        title = f"{size} MB Zipf corpus [whitespace], whole process"
        print(f"\n{title}", flush=True)
        rows = bench_whole_process(path, work / "out-whole", args.master, args.repeat)
        print_table(title, rows, "spark-collab")
        failed |= not all(r["agrees"] for r in rows)
        all_rows += [{"case": title, "bytes": path.stat().st_size, **r} for r in rows]
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": all_rows}, indent=1))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200", help="corpus sizes in MB, comma separated")
    parser.add_argument("--tokenizers", default="whitespace,words")
    parser.add_argument("--tools", default="counter,arrow,dataframe,rdd,classic,duckdb,polars")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool, in turns; the median is reported"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="bench the texts in ../shared/data instead")
    parser.add_argument("--work", default=str(REPO_ROOT / "runs" / "bench"), help="corpus cache and outputs")
    parser.add_argument("--json", default="", help="also write all rows to this JSON file")
    parser.add_argument(
        "--whole-process",
        action="store_true",
        help="time fresh `spark-collab wordcount` commands (start-up included) against one Python thread",
    )
    args = parser.parse_args(argv)

    work = Path(args.work)
    tools = ["counter", *[t for t in args.tools.split(",") if t and t != "counter"]]
    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    if args.whole_process:
        return _main_whole_process(args, work)
    started = time.perf_counter()
    spark = get_spark_session(
        "bench-wordcount",
        master=args.master,
        conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"},
    )
    session_s = time.perf_counter() - started
    warm = work / "warmup.txt"
    warm.parent.mkdir(parents=True, exist_ok=True)
    warm.write_text("warm up the python workers\n" * 100)
    started = time.perf_counter()
    ours(spark, warm, "words", "arrow", work / "out")
    warmup_s = time.perf_counter() - started
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, master {args.master}, {os.cpu_count()} CPUs")
    print(f"startup: session {session_s:.1f} s, first tiny job (python workers) {warmup_s:.1f} s", flush=True)

    cases: list[tuple[str, Path, str]] = []
    if args.real:
        shared = REPO_ROOT.parent / "shared" / "data"
        if not shared.is_dir():
            print(f"{shared} not present; nothing to do")
            return 0
        cases = [(f"{rel} [{tok}]", shared / rel, tok) for rel, tok in REAL_TEXTS if (shared / rel).exists()]
    else:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            path = _corpus_path(work, size, args.seed)
            _ensure_corpus(path, size, args.seed)
            cases += [
                (f"{size} MB Zipf corpus [{tok}]", path, tok) for tok in args.tokenizers.split(",") if tok
            ]

    all_rows = []
    failed = False
    for title, path, tokenizer in cases:
        print(f"\n{title}", flush=True)
        rows = bench_one(spark, path, tokenizer, tools, work / "out", args.repeat)
        print_table(title, rows, "arrow")
        failed |= not all(r["agrees"] for r in rows if r["tool"] not in ("duckdb", "polars") or not args.real)
        all_rows += [{"case": title, "bytes": path.stat().st_size, **r} for r in rows]
    spark.stop()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"session_s": session_s, "warmup_s": warmup_s, "rows": all_rows}, indent=1)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
