"""Where the word count's map side spends its CPU time, stage by stage, on one split of the corpus.

    python bench/wordcount_profile.py --mb 64 --repeat 3

Runs the stages of :mod:`spark_jobs.wordcount.combiner` / :mod:`spark_jobs.wordcount.block_count` by
hand, in one process, on the first ``--mb`` MB of the cached Zipf corpus (``bench/wordcount.py``
writes it), and reports the median CPU seconds (``time.process_time``, which a busy machine disturbs
far less than wall time) per stage. Two alternatives are timed on the same tokens as yardsticks: Arrow's
``value_counts`` in place of the ``group_by`` count, and ``str.split`` + ``Counter.update`` in place
of the whole vectorised route.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from spark_jobs.demo.text import write_zipf_corpus  # noqa: E402
from spark_jobs.wordcount import block_count  # noqa: E402
from spark_jobs.wordcount.inputs import read_split  # noqa: E402


def cpu_seconds(stage: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        stage()
        runs.append(time.process_time() - started)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=64, help="MB of the corpus to profile")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the median is reported")
    parser.add_argument(
        "--corpus", default=str(REPO_ROOT / "runs" / "bench" / "corpus" / "zipf-200mb-seed0.txt")
    )
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    if not corpus.exists():
        write_zipf_corpus(corpus, 200_000_000, seed=0)
    end = args.mb * 1_000_000
    blocks = list(read_split(str(corpus), 0, end))
    whitespace = [block.translate(block_count._WHITESPACE_TABLE) for block in blocks]
    tokens = [pc.list_flatten(pc.split_pattern(block_count._as_one_string(d), " ")) for d in whitespace]
    tables = [block_count._count_space_separated(d) for d in whitespace]

    def group_by_count() -> None:
        for column in tokens:
            pa.table([column], names=["w"]).group_by("w", use_threads=False).aggregate([([], "count_all")])

    stages: list[tuple[str, Callable[[], object]]] = [
        ("read the split (8 MB blocks of whole lines)", lambda: list(read_split(str(corpus), 0, end))),
        ("check UTF-8 (Arrow)", lambda: [block_count._is_valid_utf8(b) for b in blocks]),
        (
            "separators to spaces (translate)",
            lambda: [b.translate(block_count._WHITESPACE_TABLE) for b in blocks],
        ),
        (
            "split on spaces (split_pattern)",
            lambda: [
                pc.list_flatten(pc.split_pattern(block_count._as_one_string(d), " ")) for d in whitespace
            ],
        ),
        ("count: group_by count_all (used)", group_by_count),
        ("count: value_counts (yardstick)", lambda: [pc.value_counts(t) for t in tokens]),
        ("merge block tables (group_by sum)", lambda: block_count.merge_counts(tables)),
        (
            "whole whitespace route, per block",
            lambda: block_count.merge_counts([block_count.count_utf8_block(b, "whitespace") for b in blocks]),
        ),
        (
            "whole words route, per block",
            lambda: block_count.merge_counts([block_count.count_utf8_block(b, "words") for b in blocks]),
        ),
        ("yardstick: decode + str.split + Counter", lambda: [Counter(b.decode().split()) for b in blocks]),
    ]
    print(f"{args.mb} MB of {corpus.name}, {len(blocks)} blocks, median CPU seconds of {args.repeat} runs")
    print("| stage | CPU s |")
    print("|---|---:|")
    for name, stage in stages:
        print(f"| {name} | {cpu_seconds(stage, args.repeat):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
