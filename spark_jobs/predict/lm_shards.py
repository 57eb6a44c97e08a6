"""``spark-collab predict`` on a GPT run with token shards from ``spark-collab corpus`` as input.

Runs on the driver. The driver reads only each shard's small ``.idx`` document offsets and makes a
DataFrame of documents, ``(id, shard, start, end)``, ``id`` being the document's index in the
split (shard after shard, in order). The executors read the token ids themselves from the
memory-mapped ``.bin`` files (:func:`spark_jobs.predict.worker.make_shard_score_fn`), so the
shards directory must be readable at the same path on every executor, as the run directory is.

A document's range in a shard is its token ids followed by one end-of-document id; it is scored
without that last id and predicted from a leading end-of-document id, exactly as scoring the
document's raw text. The shards must have been made with the run's own tokenizer: the same ids
mean the same text only then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.common.errors import JobInputError
from spark_jobs.predict.api import PredictOptions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from contracts.manifest import Manifest
    from training.inference import LanguageModel


def token_shards(opts: PredictOptions) -> Manifest | None:
    """The manifest when ``--input`` is a token shards directory; None for text input.

    Image shards are refused here: a GPT run has nothing to do with feature vectors.
    """
    from contracts.manifest import MANIFEST, Manifest, ManifestError

    if "://" in opts.input or not (Path(opts.input) / MANIFEST).is_file():
        return None
    try:
        manifest = Manifest.read(opts.input)
    except ManifestError as exc:
        raise JobInputError(f"--input: {exc}") from None
    if manifest.kind != "tokens":
        raise JobInputError(
            f"--input {opts.input}: holds {manifest.kind} shards; a GPT run scores token shards "
            "(spark-collab corpus) or text (JSONL, Parquet or text files)"
        )
    return manifest


def check_token_shards(manifest: Manifest, opts: PredictOptions, lm: LanguageModel) -> None:
    """The shards were made with the run's tokenizer, and have the split ``--split``."""
    from contracts.tokens import TOKENIZER_FILE

    tokenizer_path = Path(opts.input) / TOKENIZER_FILE
    try:
        shards_tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobInputError(
            f"--input {opts.input}: no readable {TOKENIZER_FILE} ({exc}); re-run spark-collab corpus"
        ) from None
    if shards_tokenizer != json.loads(lm.tokenizer.to_json()):
        raise JobInputError(
            f"--input {opts.input}: the token shards were made with another tokenizer "
            f"(vocab {manifest.get('vocab_size')}) than the run's (vocab {lm.tokenizer.vocab_size}); "
            "the shards must be made with the run's tokenizer, or score the raw text instead"
        )
    if not manifest.has_split(opts.split):
        splits = sorted(manifest.splits)
        suggestion = "val" if "val" in splits else (splits[0] if splits else None)
        hint = f"; pass --split {suggestion}" if suggestion else "; re-run spark-collab corpus"
        raise JobInputError(
            f"--split {opts.split}: the token shards in {opts.input} have no split {opts.split!r} "
            f"(they have {', '.join(splits) or 'none'}){hint}"
        )


def shard_documents(spark: SparkSession, manifest: Manifest, opts: PredictOptions) -> DataFrame:
    """``id, shard, start, end`` (all int64) of every document of the split ``opts.split``.

    Only the ``.idx`` offsets are read here; the ``.bin`` files are memory-mapped (their sizes
    checked against the manifest), never read, on the driver.
    """
    import numpy as np
    import pyarrow as pa

    from contracts.manifest import ManifestError
    from contracts.tokens import open_token_shard

    columns: dict[str, list[np.ndarray]] = {"shard": [], "start": [], "end": []}
    for index in range(manifest.num_shards(opts.split)):
        try:
            offsets = open_token_shard(opts.input, opts.split, index, manifest=manifest).doc_offsets
        except (ManifestError, OSError) as exc:
            raise JobInputError(f"--input {opts.input}: {exc}") from None
        columns["shard"].append(np.full(len(offsets) - 1, index, dtype=np.int64))
        columns["start"].append(offsets[:-1].astype(np.int64))
        columns["end"].append(offsets[1:].astype(np.int64))
    arrays = {
        name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in columns.items()
    }
    table = pa.table({"id": np.arange(len(arrays["shard"]), dtype=np.int64), **arrays})
    # An Arrow table goes to the JVM in one piece, not row by row as a list of tuples would.
    return spark.createDataFrame(table)


def shard_scores_frame(
    docs: DataFrame, lm: LanguageModel, opts: PredictOptions, torch_threads: int
) -> DataFrame:
    """Every document once: id, tokens, loss_sum, from the token ids read in the executors."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    from spark_jobs.predict.worker import ShardScoreSpec, make_shard_score_fn

    spec = ShardScoreSpec(
        opts.run, lm.tokenizer.to_json(), opts.input, opts.split, torch_threads, opts.load_log
    )
    udf = predict_batch_udf(
        make_shard_score_fn(spec),
        return_type=StructType([StructField("tokens", LongType()), StructField("loss_sum", DoubleType())]),
        batch_size=opts.documents_per_call(),
    )
    scored = docs.select("id", udf("shard", "start", "end").alias("s"))
    return scored.select("id", "s.tokens", "s.loss_sum")
