"""The corpus job: raw text to deduplicated, tokenized token shards (``spark-collab corpus``).

Typed API: ``run_corpus(spark, inputs, output, CorpusOptions(...))``; command line: :func:`main`.
"""

from spark_jobs.corpus.cli import main
from spark_jobs.corpus.job import CorpusResult, run_corpus
from spark_jobs.corpus.options import CorpusOptions, DocSpec, MinHashOptions, TokenizerSpec

__all__ = [
    "CorpusOptions",
    "CorpusResult",
    "DocSpec",
    "MinHashOptions",
    "TokenizerSpec",
    "main",
    "run_corpus",
]
