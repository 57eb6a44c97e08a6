"""Per-partition work of the tokenizer and shard stages; runs in Spark's Python workers (``mapInArrow``).

- :func:`char_set_task`, :func:`word_count_task` and :func:`piece_count_task` gather what a
  vocabulary is trained from (the distinct characters; the word count's in-mapper combiner,
  :class:`spark_jobs.wordcount.combiner.BatchCounter`; the byte-level BPE trainer's pieces).
- :func:`encode_task` tokenizes Arrow batches of documents with the broadcast tokenizer and appends
  the end-of-document id; tokens travel as little-endian bytes of the shard dtype.
- :func:`write_task` writes each shard its partition holds with :func:`contracts.tokens.write_token_shard`
  and returns the manifest entries.

The ``tokenizers`` library's Rust thread pool is switched off in the workers
(``TOKENIZERS_PARALLELISM=false``): each worker is already one of the executor's parallel tasks, and
a pool that a forked worker inherited in use would be unusable (the library then warns and falls
back to one thread anyway).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from contracts.tokenizer import Tokenizer, TokenizerError, tokenizer_from_json
from contracts.tokens import DTYPES, write_token_shard
from spark_jobs.corpus.documents import OFFSET_BITS, DocumentError

OFFSET_MASK = (1 << OFFSET_BITS) - 1

TOKENS_DDL = "doc_id long, n_tokens long, tokens binary"
ENTRY_DDL = "entry string"
_tokenizers: dict[str, Tokenizer] = {}


def worker_tokenizer(tokenizer_json: str) -> Tokenizer:
    """The broadcast tokenizer, parsed once per worker process."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if tokenizer_json not in _tokenizers:
        _tokenizers.clear()
        _tokenizers[tokenizer_json] = tokenizer_from_json(tokenizer_json)
    return _tokenizers[tokenizer_json]


def char_set_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``text`` in, the distinct characters of the partition out (``ch string``)."""
    seen: set[str] = set()
    for batch in batches:
        for text in batch.column(0).to_pylist():
            seen.update(text)
    yield pa.RecordBatch.from_arrays([pa.array(sorted(seen), pa.string())], names=["ch"])


def word_count_task(split: str):
    """``text`` in, (word, count) of the partition out, counted exactly as the word count counts."""

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from spark_jobs.wordcount.combiner import BatchCounter

        counter = BatchCounter(split)
        for batch in batches:
            texts = batch.column(0).to_pylist()
            if texts:
                counter.add_blob(("\n".join(texts) + "\n").encode("utf-8"))
        yield counter.result()

    return count


def piece_count_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``text`` in, (piece, count) of the partition out: the byte-level BPE trainer's word counts
    (:class:`contracts.bpe_pieces.PieceCounter`)."""
    from contracts.bpe_pieces import PieceCounter

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    counter = PieceCounter()
    for batch in batches:
        counter.add(batch.column(0).to_pylist())
    counts = counter.counts()
    yield pa.RecordBatch.from_arrays(
        [pa.array(list(counts), pa.string()), pa.array(list(counts.values()), pa.int64())],
        names=["piece", "count"],
    )


def encode_documents(tokenizer: Tokenizer, texts: list[str], dtype: str) -> list[bytes]:
    """Each text's token ids plus the end-of-document id, as bytes of ``dtype``."""
    np_dtype = DTYPES[dtype]
    eot = np.array([tokenizer.eot_id], dtype=np_dtype).tobytes()
    return [encoded + eot for encoded in tokenizer.encode_batch_bytes(texts, np_dtype)]


def _unencodable(tokenizer: Tokenizer, doc_ids: list[int], texts: list[str]) -> DocumentError:
    """The first document of a batch the tokenizer cannot encode (only a reused char tokenizer
    can fail: words map unknown words to <unk>, and byte-level BPE covers every byte)."""
    for doc, text in zip(doc_ids, texts, strict=True):
        try:
            tokenizer.encode(text)
        except TokenizerError as exc:
            where = f"input file {doc >> OFFSET_BITS} (in sorted order), the document at offset {doc & OFFSET_MASK}"
            return DocumentError(
                f"{where}: {exc}; the reused tokenizer (--tokenizer file:...) cannot encode this corpus: "
                "reuse one trained on text with these characters, or train one here (char, words:V, bpe:V)"
            )
    return DocumentError("a batch the tokenizer cannot encode")


def encode_task(tokenizer_broadcast, dtype: str):
    """``doc_id, text`` in, TOKENS_DDL out."""
    itemsize = DTYPES[dtype].itemsize

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tokenizer = worker_tokenizer(tokenizer_broadcast.value)
        for batch in batches:
            texts = batch.column(1).to_pylist()
            try:
                encoded = encode_documents(tokenizer, texts, dtype)
            except TokenizerError:
                raise _unencodable(tokenizer, batch.column(0).to_pylist(), texts) from None
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(0),
                    pa.array([len(b) // itemsize for b in encoded], pa.int64()),
                    pa.array(encoded, pa.binary()),
                ],
                names=["doc_id", "n_tokens", "tokens"],
            )

    return encode


def write_task(root: str, dtype: str, split_of: Callable[[int], tuple[str, int]]):
    """``part, tokens, n_tokens`` sorted by (part, position) in; one manifest entry (JSON) per shard out.

    ``split_of(part)`` names the (split, shard index) that a part is.
    """

    def flush(part: int, chunks: list[bytes], lengths: list[int]) -> pa.RecordBatch:
        split, shard = split_of(part)
        tokens = np.frombuffer(b"".join(chunks), dtype=DTYPES[dtype])
        entry = write_token_shard(root, split, shard, tokens, np.asarray(lengths, dtype=np.int64), dtype)
        entry["split"] = split
        return pa.RecordBatch.from_arrays([pa.array([json.dumps(entry, sort_keys=True)])], names=["entry"])

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current: int | None = None
        chunks: list[bytes] = []
        lengths: list[int] = []
        for batch in batches:
            columns = [batch.column(i).to_pylist() for i in range(3)]
            for part, tokens, n_tokens in zip(*columns, strict=True):
                if part != current:
                    if current is not None:
                        yield flush(current, chunks, lengths)
                    current, chunks, lengths = part, [], []
                chunks.append(tokens)
                lengths.append(n_tokens)
        if current is not None:
            yield flush(current, chunks, lengths)

    return write
