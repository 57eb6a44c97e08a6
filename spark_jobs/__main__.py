"""``spark-collab <job> ...`` and ``python -m spark_jobs <job> ...``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

JOBS: dict[str, tuple[str, str]] = {
    "wordcount": ("spark_jobs.wordcount", "MapReduce word count over text files"),
    "shard": ("spark_jobs.shard", "turn a data set into one Parquet shard per training rank"),
    "train": ("spark_jobs.train", "data-parallel training (DDP/FSDP) launched by TorchDistributor"),
    "collab": ("spark_jobs.collab", "collaborative training (DML, FedAvg) and fusion"),
    "corpus": ("spark_jobs.corpus", "text to deduplicated, tokenized token shards and a tokenizer"),
    "generate": ("spark_jobs.predict.generate", "sample text from a trained GPT run"),
    "predict": ("spark_jobs.predict.cli", "batch predictions of a trained model with predict_batch_udf"),
    "demo": ("spark_jobs.demo", "the platform end to end on data that ships with the installation"),
}


def _usage() -> str:
    lines = ["usage: spark-collab <job> [options]   (spark-collab <job> --help for options)", "", "jobs:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in JOBS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    job, rest = args[0], args[1:]
    if job not in JOBS:
        print(f"error: unknown job {job!r}; choose one of: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(JOBS[job][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
