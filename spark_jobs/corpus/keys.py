"""What the filter and dedup stages need of each document, computed while it is read.

Reading is the one pass over the text before tokenizing. While a reading task holds a batch of
documents (in Spark's Python workers) it also computes, per document:

- ``n_chars``: the length in characters (code points, as Spark's ``length``), for the length filter;
- ``digest`` (``exact``): SHA-256 of the normalized text: lowercased, split at runs of Unicode
  whitespace (``str.split``) and joined with one space, so leading and trailing whitespace is gone;
- ``sig`` and ``bands`` (``minhash``): the MinHash signature and LSH band keys of
  :mod:`spark_jobs.corpus.minhash`; null when the document has no word.

The later stages then work on these small columns and never read the text again; the text is read
once more only to train the tokenizer and to tokenize. A document removed by an earlier stage had
its keys computed for nothing, which costs less than a second pass over the text that remains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from spark_jobs.corpus.minhash import Signer, signature_arrays
from spark_jobs.corpus.options import CorpusOptions, MinHashOptions

DIGEST_DDL = "doc_id long, digest binary"


def normalized_digest(text: str) -> bytes:
    """The exact-dedup key: documents with equal keys are one group."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).digest()


@dataclass(frozen=True)
class DocumentKeys:
    """Which key columns the reading pass adds (a small picklable spec; the work is in :meth:`maker`)."""

    exact: bool = False
    minhash: MinHashOptions | None = None
    seed: int = 0

    @classmethod
    def for_options(cls, options: CorpusOptions) -> DocumentKeys:
        return cls(
            exact="exact" in options.dedup,
            minhash=options.minhash if "minhash" in options.dedup else None,
            seed=options.seed,
        )

    @property
    def fields(self) -> list[pa.Field]:
        """The key columns, in order."""
        fields = [pa.field("n_chars", pa.int64())]
        if self.exact:
            fields.append(pa.field("digest", pa.binary()))
        if self.minhash:
            fields += [pa.field("sig", pa.list_(pa.int64())), pa.field("bands", pa.list_(pa.int64()))]
        return fields

    @property
    def ddl(self) -> str:
        spark_types = {"n_chars": "long", "digest": "binary", "sig": "array<long>", "bands": "array<long>"}
        return ", ".join(f"{f.name} {spark_types[f.name]}" for f in self.fields)

    def maker(self) -> Callable[[list[str]], list[pa.Array]]:
        """A function from a batch's texts to its key columns, in :attr:`fields` order; call it in the
        worker (the MinHash signer keeps a per-task cache of word hashes)."""
        signer = Signer(self.minhash, self.seed) if self.minhash else None

        def columns(texts: list[str]) -> list[pa.Array]:
            out = [pa.array([len(t) for t in texts], pa.int64())]
            if self.exact:
                out.append(pa.array([normalized_digest(t) for t in texts], pa.binary()))
            if signer is not None:
                out += signature_arrays([signer.sign(t) for t in texts])
            return out

        return columns


def digest_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``: ``doc_id, text`` in, DIGEST_DDL out (exact dedup of a frame that was not
    read by the corpus job's reading pass)."""
    for batch in batches:
        digests = [normalized_digest(t) for t in batch.column(1).to_pylist()]
        yield pa.RecordBatch.from_arrays(
            [batch.column(0), pa.array(digests, pa.binary())], names=["doc_id", "digest"]
        )
