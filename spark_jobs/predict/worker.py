"""The executor side of ``spark-collab predict``: this module runs in Spark's Python workers.

The ``make_*_fn`` factories are what ``pyspark.ml.functions.predict_batch_udf`` calls to build
the predictor: :func:`make_predict_fn` (classifier runs), :func:`make_score_fn` (GPT runs, text
documents), :func:`make_shard_score_fn` (GPT runs, documents of token shards read in place) and
:func:`make_generate_fn` (GPT runs, ``--generate``: a sampled completion per prompt). pyspark keeps the result
in its per-worker ``ModelCache`` (with the default ``spark.python.worker.reuse=true``), so the
model is read from the run directory once per Python worker, not once per task or batch. The run
directory is either read at the same path on every executor (shared storage), or shipped with the
job through ``SparkContext.addArchive`` and found with ``SparkFiles.get`` (``shipped_as``; see
docs/cluster.md).

Only this module and :mod:`training.inference` (pure torch) are imported in the workers (the
package's ``__init__`` imports nothing eagerly for that reason); nothing under ``training/``
imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PredictFn = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]
MALFORMED = -1
"""The prediction a classifier's predictor returns for a row holding a null or NaN."""


@dataclass(frozen=True)
class PredictSpec:
    """Everything a worker needs to build the predictor; small and picklable (it travels in the UDF)."""

    run_dir: str
    fusion: str | None
    feature_shape: tuple[int, ...]
    num_classes: int
    block_rows: int
    """Rows per forward pass (padded blocks, see :func:`training.inference.probabilities_by_id`)."""
    torch_threads: int
    """torch intra-op threads per worker: the task's CPUs, so workers do not oversubscribe the cores."""
    load_log: str | None = None
    """A file each model load appends one line (its pid and the directory read) to; None: not recorded."""
    shipped_as: str | None = None
    """The name the driver shipped the model files under (``SparkFiles``); None: read ``run_dir``."""


def model_dir(spec: PredictSpec) -> str:
    """Where this worker reads the model: the shipped copy when there is one, else ``run_dir``."""
    if spec.shipped_as is None:
        return spec.run_dir
    from pyspark import SparkFiles

    return SparkFiles.get(spec.shipped_as)


def record_load(path: str | None, source: str) -> None:
    """Append ``<pid> <source>`` to ``path`` (O_APPEND: concurrent workers never interleave a line)."""
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {source}\n".encode())
    finally:
        os.close(fd)


def make_predict_fn(spec: PredictSpec) -> Callable[[], PredictFn]:
    """The zero-argument factory ``predict_batch_udf`` wants; it loads the model when first called."""

    def load() -> PredictFn:
        import torch

        from training.inference import load_classifier, probabilities_by_id

        torch.set_num_threads(spec.torch_threads)
        source = model_dir(spec)
        classifier = load_classifier(source, spec.fusion, (spec.feature_shape, spec.num_classes))
        record_load(spec.load_log, source)

        def predict(ids: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
            # A null inside a vector arrives as NaN. Such a row is malformed: the model sees zeros in
            # its place (as for a row of the wrong shape) and its prediction is MALFORMED, which the
            # driver's frame turns into a null row.
            malformed = np.isnan(features).any(axis=1)
            if malformed.any():
                features = np.where(malformed[:, None], np.float32(0), features)
            probs = probabilities_by_id(
                classifier, features, np.asarray(ids, dtype=np.int64), spec.block_rows
            )
            prediction = probs.argmax(dim=1).to(torch.int32).numpy()
            prediction[malformed] = MALFORMED
            return {"prediction": prediction, "probabilities": probs.numpy()}

        return predict

    return load


ScoreFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ScoreSpec:
    """What a worker needs to score documents with a GPT run; picklable."""

    run_dir: str
    tokenizer_json: str
    """The run's tokenizer as saved (the driver read it once; executors need not see the shards)."""
    torch_threads: int
    load_log: str | None = None


def make_score_fn(spec: ScoreSpec) -> Callable[[], ScoreFn]:
    """The factory for ``predict_batch_udf``: documents (strings) in; token count and summed loss out.

    A document the tokenizer cannot encode (a character outside a char vocabulary) gets
    ``tokens = -1``; the driver turns that into a null row and counts it.
    """

    def load() -> ScoreFn:
        import torch

        from contracts.tokenizer import TokenizerError, tokenizer_from_json
        from training.inference import document_loss, load_language_model

        torch.set_num_threads(spec.torch_threads)
        lm = load_language_model(spec.run_dir, tokenizer_from_json(spec.tokenizer_json))
        record_load(spec.load_log, spec.run_dir)

        def score(texts: np.ndarray) -> dict[str, np.ndarray]:
            tokens = np.full(len(texts), -1, dtype=np.int64)
            loss = np.full(len(texts), np.nan, dtype=np.float64)
            for i, text in enumerate(texts):
                try:
                    ids = lm.tokenizer.encode(str(text))
                except TokenizerError:
                    continue
                tokens[i], loss[i] = document_loss(lm.model, ids, lm.tokenizer.eot_id)
            return {"tokens": tokens, "loss_sum": loss}

        return score

    return load


ShardScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ShardScoreSpec:
    """What a worker needs to score documents of token shards in place; picklable."""

    run_dir: str
    tokenizer_json: str
    """The run's tokenizer (the driver checked that the shards were made with it)."""
    shards_dir: str
    """The token shards directory, read at this path (shared storage, like ``run_dir``)."""
    split: str
    torch_threads: int
    load_log: str | None = None


def make_shard_score_fn(spec: ShardScoreSpec) -> Callable[[], ShardScoreFn]:
    """The factory for ``predict_batch_udf``: (shard, start, end) of each document in; token count
    and summed loss out. Each worker memory-maps a shard when it first meets one, so only the pages
    of its own documents are read."""

    def load() -> ShardScoreFn:
        import torch

        from contracts.manifest import Manifest
        from contracts.tokenizer import tokenizer_from_json
        from contracts.tokens import TokenShard, open_token_shard
        from training.inference import document_loss, load_language_model

        torch.set_num_threads(spec.torch_threads)
        lm = load_language_model(spec.run_dir, tokenizer_from_json(spec.tokenizer_json))
        record_load(spec.load_log, spec.run_dir)
        eot_id = lm.tokenizer.eot_id
        manifest = Manifest.read(spec.shards_dir, kind="tokens")
        opened: dict[int, TokenShard] = {}

        def score(shards: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> dict[str, np.ndarray]:
            tokens = np.empty(len(shards), dtype=np.int64)
            loss = np.empty(len(shards), dtype=np.float64)
            for i, (shard, start, end) in enumerate(zip(shards, starts, ends, strict=True)):
                shard = int(shard)
                if shard not in opened:
                    opened[shard] = open_token_shard(spec.shards_dir, spec.split, shard, manifest=manifest)
                ids = opened[shard].tokens[int(start) : int(end)]
                # The corpus job ends every document with the end-of-document id; it is the next
                # document's context, not part of this one (scoring the raw text leaves it out too).
                if len(ids) and int(ids[-1]) == eot_id:
                    ids = ids[:-1]
                tokens[i], loss[i] = document_loss(lm.model, ids.tolist(), eot_id)
            return {"tokens": tokens, "loss_sum": loss}

        return score

    return load


GenerateFn = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class GenerateSpec:
    """What a worker needs to complete prompts with a GPT run; picklable."""

    run_dir: str
    tokenizer_json: str
    max_new_tokens: int
    temperature: float
    top_k: int
    """0: sample among all ids."""
    seed: int
    """The job's seed; each row samples from its own generator, seeded from (seed, row id)."""
    torch_threads: int
    load_log: str | None = None


def make_generate_fn(spec: GenerateSpec) -> Callable[[], GenerateFn]:
    """The factory for ``predict_batch_udf``: (id, prompt) in; the decoded completion and its token
    count out. A prompt the tokenizer cannot encode gets ``new_tokens = -1`` (the driver makes it a
    null row and counts it)."""

    def load() -> GenerateFn:
        import torch

        from contracts.tokenizer import TokenizerError, tokenizer_from_json
        from training.inference import load_language_model
        from training.lm_sample import prompt_ids, row_seed, sample_ids

        torch.set_num_threads(spec.torch_threads)
        lm = load_language_model(spec.run_dir, tokenizer_from_json(spec.tokenizer_json))
        record_load(spec.load_log, spec.run_dir)

        def complete(ids: np.ndarray, prompts: np.ndarray) -> dict[str, np.ndarray]:
            completions = np.full(len(prompts), "", dtype=object)
            new_tokens = np.full(len(prompts), -1, dtype=np.int64)
            for i, (row_id, prompt) in enumerate(zip(ids, prompts, strict=True)):
                try:
                    context = prompt_ids(lm.tokenizer, str(prompt))
                except TokenizerError:
                    continue
                generator = torch.Generator().manual_seed(row_seed(spec.seed, int(row_id)))
                new = sample_ids(
                    lm.model, context, spec.max_new_tokens, spec.temperature, spec.top_k, generator
                )
                completions[i], new_tokens[i] = lm.tokenizer.decode(new), len(new)
            return {"completion": completions, "new_tokens": new_tokens}

        return complete

    return load
