"""Training the tokenizer on the deduplicated documents; only the vocabulary reaches the driver.

- ``char``: the distinct characters of each partition (workers), unioned on the driver.
- ``words:V``: the word count's map side per partition (workers), summed by Spark, the V most
  frequent kept (ties broken by the word, so the vocabulary is deterministic).
- ``file:PATH``: no training; the tokenizer an earlier corpus output saved, loaded as it is (a new
  corpus tokenized with the ids a trained model knows).
- ``bpe:V``: the executors count the pieces the byte-level pre-tokenizer cuts the texts into
  (:class:`contracts.bpe_pieces.PieceCounter`), Spark sums the counts per piece, and the ``tokenizers``
  trainer on the driver learns its merges from those counts
  (:meth:`contracts.tokenizer.BpeTokenizer.train_from_counts`): the same tokenizer as training on the
  texts, which never reach the driver; the distinct pieces and their counts do (the trainer would
  hold them anyway).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from contracts.tokenizer import BpeTokenizer, CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from spark_jobs.common.errors import JobInputError
from spark_jobs.corpus.options import TokenizerSpec
from spark_jobs.corpus.workers import char_set_task, piece_count_task, word_count_task

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


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
        counts = (
            texts.mapInArrow(piece_count_task, "piece string, count long")
            .groupBy("piece")
            .agg(F.sum("count").alias("count"))
            .toArrow()
        )
        pieces = zip(counts["piece"].to_pylist(), counts["count"].to_pylist(), strict=True)
        tokenizer = BpeTokenizer.train_from_counts(pieces, spec.vocab)
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
