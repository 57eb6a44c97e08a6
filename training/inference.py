"""Inference in one process: a trained classifier loaded from its run directory, class probabilities.

Pure torch (no pyspark): it runs in a torch rank, in a test, or in Spark's Python workers through
:mod:`spark_jobs.predict.worker`. Three kinds of run directory hold a classifier:

- a ``train`` run: ``result.json`` (the config) and ``checkpoint.pt`` (the full model state);
- a ``collab`` run: ``result.json`` and ``peers.pt`` (every peer's final parameters and init
  fingerprint; one global model for FedAvg / local SGD), fused here by ``ensemble`` (mean of the
  peers' probabilities), ``average`` (parameter average, refused for peers from different inits,
  see :mod:`training.fusion`) or ``peer:I`` (peer I alone).

Batch invariance. torch's CPU kernels do not give a row the same bits in every batch: the result
depends on the batch's row count and on the row's memory alignment inside every layer's
activations (a 10-wide float32 row starts 40 bytes after the previous one, so its alignment to the
64-byte line repeats every 16 rows). :func:`probabilities_by_id` removes both: every block has
exactly ``block_rows`` rows (zero-padded), and the row with id ``i`` sits at a slot congruent to
``i`` modulo :data:`ALIGN_ROWS`. A row's probabilities then depend only on its features and its
id: the same bits whatever the partitioning, and the same as a plain loop over the rows in id
order in batches of ``block_rows`` (ids 0..N-1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from contracts.manifest import Manifest, ManifestError
from contracts.rundir import PEER_MODELS, RunDir
from training.checkpoint import load_model_state
from training.config import config_from_dict
from training.fusion import FusionError, average_parameters, ensemble_probs
from training.models import build_model

ALIGN_ROWS = 16
"""Rows per alignment period: a 64-byte cache line holds 16 float32 values, so any row width
repeats its alignment after at most 16 rows."""
FUSION_CHOICES = "ensemble, average or peer:I"
PEER_MODELS_FORMAT = 1


class InferenceError(ValueError):
    """A run directory, fusion or input that cannot give predictions; one line naming what to change."""


# ----------------------------------------------------------------------------------------------
# Fusion choice
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fusion:
    """How a collab run's peers become one predictor."""

    kind: str
    """``ensemble``, ``average`` or ``peer``."""
    peer: int = -1
    """The peer index for ``peer``."""

    def __str__(self) -> str:
        return f"peer:{self.peer}" if self.kind == "peer" else self.kind


def parse_fusion(text: str) -> Fusion:
    """``ensemble`` | ``average`` | ``peer:I``; InferenceError naming ``--fusion`` otherwise."""
    if text in ("ensemble", "average"):
        return Fusion(text)
    kind, sep, index = text.partition(":")
    if kind == "peer" and sep and index.isdigit():
        return Fusion("peer", int(index))
    raise InferenceError(f"--fusion {text!r}: unknown fusion; choose {FUSION_CHOICES}")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass
class Classifier:
    """One predictor: a single network, or several whose probabilities are averaged (ensemble)."""

    models: list[nn.Module]
    feature_shape: tuple[int, ...]
    num_classes: int
    description: str
    """E.g. ``cnn (train run)`` or ``ensemble of 2 peers (dml collab run)``."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return math.prod(self.feature_shape)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``[B, C]`` (float32) of a float32 batch ``[B, D]``."""
        probs = [torch.softmax(model(features), dim=1) for model in self.models]
        return probs[0] if len(probs) == 1 else ensemble_probs(probs)


def read_result(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``result.json``; InferenceError naming ``--run`` when it is missing or unreadable."""
    path = RunDir.at(run_dir).result
    if not Path(run_dir).is_dir():
        raise InferenceError(f"--run {run_dir}: no such directory; pass the run.dir of a train or collab run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InferenceError(
            f"--run {run_dir}: no result.json, so no finished run here; pass the run.dir of a finished "
            "train or collab run"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InferenceError(f"--run {path}: unreadable ({exc}); re-run the training") from None


def _data_shape(result: dict[str, Any], run_dir: Path) -> tuple[tuple[int, ...], int]:
    """Feature shape and class count: recorded in result.json, else read from the training shards."""
    if "feature_shape" in result and "num_classes" in result:
        return tuple(int(d) for d in result["feature_shape"]), int(result["num_classes"])
    shards = result.get("config", {}).get("data", {}).get("shards", "")
    try:
        manifest = Manifest.read(shards, kind="images")
    except (ManifestError, OSError) as exc:
        raise InferenceError(
            f"--run {run_dir}: result.json does not record the feature shape and the training shards "
            f"data.shards={shards!r} are not readable ({exc}); make them reachable at that path"
        ) from None
    return tuple(int(d) for d in manifest.extra["feature_shape"]), int(manifest.extra["num_classes"])


def _build(
    name: str, model_cfg: Any, shape: tuple[int, ...], classes: int, state: dict[str, Any]
) -> nn.Module:
    model = build_model(name, shape, classes, model_cfg)
    model.load_state_dict(state)
    return model.eval()


def load_classifier(
    run_dir: str | Path, fusion: str | None = None, data_shape: tuple[tuple[int, ...], int] | None = None
) -> Classifier:
    """The classifier a ``train`` or ``collab`` run left in ``run_dir``.

    ``fusion`` applies to collab runs (None: the run's own ``collab.fusion``, ``ensemble`` when that
    was ``none``); a train run holds one network and refuses any ``fusion``. ``data_shape``
    (feature shape, classes) spares a train run's loader the training shards' manifest, which an
    executor may not see; the driver loads the classifier once and passes its shape on.
    """
    root = Path(run_dir)
    result = read_result(root)
    if "mode" in result:
        return _load_collab(root, result, fusion)
    if fusion is not None:
        raise InferenceError(
            f"--fusion {fusion}: {root} is a train run with one network; drop --fusion (it is for collab runs)"
        )
    checkpoint = RunDir.at(root).checkpoint
    if not checkpoint.exists():
        raise InferenceError(
            f"--run {root}: no {checkpoint.name}, so no model to load; train with run.checkpoint=true"
        )
    cfg = config_from_dict(result["config"])
    shape, classes = data_shape or _data_shape(result, root)
    state = load_model_state(checkpoint)
    model = _build(cfg.model.name, cfg.model, shape, classes, state)
    return Classifier([model], shape, classes, f"{cfg.model.name} (train run)")


def _load_collab(root: Path, result: dict[str, Any], fusion: str | None) -> Classifier:
    path = root / PEER_MODELS
    if not path.exists():
        raise InferenceError(
            f"--run {root}: no {PEER_MODELS}, so no peer models to load (collab runs save them when they "
            "finish); re-run the collab job"
        )
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(result["config"])
    shape, classes = tuple(int(d) for d in saved["feature_shape"]), int(saved["num_classes"])
    peers = saved["peers"]
    run_fusion = (cfg.collab.fusion if cfg.collab is not None else "ensemble") or "ensemble"
    choice = parse_fusion(
        fusion if fusion is not None else ("ensemble" if run_fusion == "none" else run_fusion)
    )
    mode = result["mode"]
    if choice.kind == "peer":
        if not 0 <= choice.peer < len(peers):
            raise InferenceError(
                f"--fusion {choice}: the run has {len(peers)} peer(s); choose peer:0 .. peer:{len(peers) - 1}"
            )
        peer = peers[choice.peer]
        model = _build(peer["name"], cfg.model, shape, classes, peer["state"])
        return Classifier([model], shape, classes, f"peer {choice.peer} ({peer['name']}, {mode} collab run)")
    if choice.kind == "average":
        try:
            state = average_parameters([p["state"] for p in peers], [p["init_fingerprint"] for p in peers])
        except FusionError as exc:
            raise InferenceError(f"--fusion average: {exc}") from None
        model = _build(peers[0]["name"], cfg.model, shape, classes, state)
        return Classifier([model], shape, classes, f"average of {len(peers)} peers ({mode} collab run)")
    models = [_build(p["name"], cfg.model, shape, classes, p["state"]) for p in peers]
    return Classifier(models, shape, classes, f"ensemble of {len(peers)} peers ({mode} collab run)")


def peer_models_document(
    states: list[dict[str, torch.Tensor]],
    names: list[str],
    fingerprints: list[str],
    feature_shape: tuple[int, ...],
    num_classes: int,
) -> dict[str, Any]:
    """What ``peers.pt`` holds: every peer's parameters, architecture and init fingerprint."""
    return {
        "format": PEER_MODELS_FORMAT,
        "feature_shape": list(feature_shape),
        "num_classes": num_classes,
        "peers": [
            {"name": n, "state": s, "init_fingerprint": f}
            for s, n, f in zip(states, names, fingerprints, strict=True)
        ],
    }


# ----------------------------------------------------------------------------------------------
# Batch-invariant probabilities
# ----------------------------------------------------------------------------------------------


def aligned_slots(ids: np.ndarray, block_rows: int) -> tuple[np.ndarray, int]:
    """For each row, its slot in a run of padded blocks, and the number of blocks.

    The j-th row whose id is congruent to k (mod ALIGN_ROWS) goes to block ``j // per_block`` at
    position ``(j % per_block) * ALIGN_ROWS + k``: every slot keeps its id's residue.
    """
    if block_rows % ALIGN_ROWS:
        raise ValueError(f"block_rows={block_rows} must be a multiple of {ALIGN_ROWS}")
    per_block = block_rows // ALIGN_ROWS
    residues = np.asarray(ids, dtype=np.int64) % ALIGN_ROWS
    slots = np.empty(len(residues), dtype=np.int64)
    blocks = 0
    for k in range(ALIGN_ROWS):
        rows = np.flatnonzero(residues == k)
        j = np.arange(len(rows), dtype=np.int64)
        slots[rows] = (j // per_block) * block_rows + (j % per_block) * ALIGN_ROWS + k
        blocks = max(blocks, -(-len(rows) // per_block))
    return slots, blocks


@torch.no_grad()
def probabilities_by_id(
    classifier: Classifier, features: np.ndarray | torch.Tensor, ids: np.ndarray, block_rows: int
) -> torch.Tensor:
    """Probabilities ``[N, C]`` of the rows ``features[N, D]`` whose ids are ``ids``, batch-invariant.

    See the module docstring: each row is computed at a slot that only its id decides.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.shape[0] == 0:
        return torch.empty(0, classifier.num_classes, dtype=torch.float32)
    slots, blocks = aligned_slots(ids, block_rows)
    index = torch.from_numpy(slots)
    padded = torch.zeros(blocks * block_rows, x.shape[1], dtype=torch.float32)
    padded[index] = x
    out = torch.empty(blocks * block_rows, classifier.num_classes, dtype=torch.float32)
    for start in range(0, blocks * block_rows, block_rows):
        out[start : start + block_rows] = classifier.probabilities(padded[start : start + block_rows])
    return out[index]


# ----------------------------------------------------------------------------------------------
# Language models: per-document loss and perplexity
# ----------------------------------------------------------------------------------------------


@dataclass
class LanguageModel:
    """A GPT run's model and the tokenizer saved with its token shards."""

    model: Any
    """A :class:`training.gpt.GPT` in eval mode."""
    tokenizer: Any
    """The run's :class:`contracts.tokenizer.Tokenizer`."""
    description: str


def is_language_model_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a GPT run (its config's ``model.name`` is ``gpt``)."""
    model = read_result(run_dir).get("config", {}).get("model", {})
    return isinstance(model, dict) and model.get("name") == "gpt"


def load_language_model(run_dir: str | Path, tokenizer: Any | None = None) -> LanguageModel:
    """The GPT of ``run_dir``'s checkpoint; ``tokenizer``: the run's own, when the caller has it
    already (executors get it from the driver instead of reading the token shards directory)."""
    from training.lm_sample import RunError, load_run

    try:
        run = load_run(run_dir, tokenizer=tokenizer)
    except RunError as exc:
        raise InferenceError(str(exc)) from None
    shape = run.model.shape
    return LanguageModel(
        run.model,
        run.tokenizer,
        f"gpt {shape.n_layer}x{shape.n_embd}, block {shape.block_size}, vocab {shape.vocab_size}",
    )


# A document's windows go through the model together, at most this many tokens per forward pass:
# batched windows keep the matrix products large, and the cap bounds memory for long documents.
SCORE_TOKENS_PER_PASS = 8192


@torch.no_grad()
def document_loss(model: Any, ids: list[int], eot_id: int) -> tuple[int, float]:
    """``(tokens, summed cross-entropy in nats)`` of one document's token ids.

    Every token is predicted from the ones before it, the first from the end-of-document id (the
    shards put one before each document, and generation starts from it). The document is cut into
    consecutive windows of ``block_size`` predictions; each window sees only its own tokens. The
    windows are scored in batches (the last one padded at its end, which the causal mask hides from
    the real positions); the sum is accumulated in float64 from float32 losses. Batching depends on
    the document alone, so a document scores the same wherever it is scored.
    """
    import torch.nn.functional as F

    n = len(ids)
    if n == 0:
        return 0, 0.0
    block = int(model.shape.block_size)
    windows = -(-n // block)
    width = block if windows > 1 else n
    sequence = torch.full((windows * width + 1,), eot_id, dtype=torch.long)
    sequence[: n + 1] = torch.tensor([eot_id, *ids], dtype=torch.long)
    inputs = sequence[:-1].view(windows, width)
    targets = sequence[1:].clone()
    targets[n:] = -100  # padding: no prediction
    targets = targets.view(windows, width)
    per_pass = max(1, SCORE_TOKENS_PER_PASS // width)
    total = 0.0
    for first in range(0, windows, per_pass):
        logits, _ = model(inputs[first : first + per_pass])
        losses = F.cross_entropy(
            logits.float().flatten(0, 1), targets[first : first + per_pass].flatten(), reduction="none"
        )
        total += float(losses.double().sum())
    return n, total
