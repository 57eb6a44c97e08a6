"""Training the tokenizer on the deduplicated documents; only the vocabulary reaches the driver.

- ``char``: the distinct characters of each partition (workers), unioned on the driver.
- ``words:V``: the word count's map side per partition (workers), summed by Spark, the V most
  frequent kept (ties broken by the word, so the vocabulary is deterministic).
- ``file:PATH``: no training; the tokenizer an earlier corpus output saved, loaded as it is (a new
  corpus tokenized with the ids a trained model knows).
- ``bpe:V``: the ``tokenizers`` trainer on the driver, fed the texts streamed partition by partition
  from the executors (``toLocalIterator``): the driver holds one partition at a time, never the corpus.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from contracts.tokenizer import BpeTokenizer, CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from spark_jobs.common.errors import JobInputError
from spark_jobs.corpus.options import TokenizerSpec
from spark_jobs.corpus.workers import char_set_task, word_count_task

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Texts handed to the BPE trainer per call: enough for its parallel pre-tokenization to pay off.
BPE_TEXTS_PER_BATCH = 1024


def _texts(docs: DataFrame) -> Iterator[list[str]]:
    batch: list[str] = []
    for row in docs.select("text").toLocalIterator(prefetchPartitions=True):
        batch.append(row[0])
        if len(batch) >= BPE_TEXTS_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(docs: DataFrame, spec: TokenizerSpec, word_split: str) -> Tokenizer:
    """A tokenizer of kind ``spec.kind`` trained on ``docs.text``; JobInputError when the data is too small."""
    from pyspark.sql import functions as F

    if spec.kind == "file":  # reused as it is, so that these shards' ids mean what the earlier ones' do
        return load_tokenizer(spec.path)
    texts = docs.select("text")
    if spec.kind == "char":
        chars = [r[0] for r in texts.mapInArrow(char_set_task, "ch string").distinct().collect()]
        return CharTokenizer(chars)
    if spec.kind == "words":
        counts = (
            texts.mapInArrow(word_count_task(word_split), "word string, count long")
            .where(F.col("word").isNotNull())
            .groupBy("word")
            .agg(F.sum("count").alias("count"))
        )
        top = counts.orderBy(F.desc("count"), "word").limit(spec.vocab).collect()
        if len(top) < spec.vocab:
            raise JobInputError(
                f"--tokenizer {spec.spec}: the corpus has only {len(top)} distinct words "
                f"({word_split} split); pass words:{len(top)} or less, or more text"
            )
        return WordTokenizer([r["word"] for r in top], word_split)
    # The driver is the only process training, so it may use every core; workers switch it off.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        tokenizer = BpeTokenizer.train(_texts(docs), spec.vocab)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    if tokenizer.vocab_size < spec.vocab:
        raise JobInputError(
            f"--tokenizer {spec.spec}: the corpus fills only {tokenizer.vocab_size} BPE ids; "
            f"pass bpe:{tokenizer.vocab_size} or less, or more text"
        )
    return tokenizer
