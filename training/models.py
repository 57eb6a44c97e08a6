"""Model registry: adding a model is one decorated function.

A builder takes the data's feature shape (e.g. ``(784,)``, ``(1, 28, 28)`` or ``(64,)``) and the
number of classes, plus the :class:`~training.config.ModelConfig`, and returns an ``nn.Module``
that maps a float32 batch ``[B, *feature_shape]`` (or flat ``[B, prod(feature_shape)]``) to logits
``[B, num_classes]``. Softmax is left to the loss (``cross_entropy``), as the original article's softmax
output layer plus categorical cross-entropy is the same function.

Models hold no parallelism code; DDP/FSDP wrapping happens in :mod:`training.loop`.

Example::

    @register("tiny")
    def tiny(feature_shape, num_classes, cfg):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(feature_shape), num_classes))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from training.config import ModelConfig

ModelBuilder = Callable[[tuple[int, ...], int, ModelConfig], nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``builder`` available as ``model.name = "<name>"``."""

    def deco(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return deco


# Former names, so that an old config gets told the new one instead of a bare "unknown".
RENAMED = {"mlp_seed": "mlp784"}


def available_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def unknown_model_message(name: str) -> str:
    """What to say about a model name that is not registered."""
    if name in RENAMED:
        return f"model {name!r} is now called {RENAMED[name]!r}; use that name"
    return f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}"


def build_model(
    name: str, feature_shape: Sequence[int], num_classes: int, cfg: ModelConfig | None = None
) -> nn.Module:
    """Instantiate model ``name`` for data of ``feature_shape`` with ``num_classes`` classes."""
    if name not in _REGISTRY:
        raise ValueError(f"model.name: {unknown_model_message(name)}")
    cfg = cfg or ModelConfig(name=name)
    return _REGISTRY[name](tuple(int(d) for d in feature_shape), int(num_classes), cfg)


@register("mlp784")
def mlp784(feature_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The original article's network exactly: inputs -> Dense(10, relu) -> Dense(num_classes) (softmax in the loss).

    For MNIST that is 784 -> 10 -> 10: 7,850 + 110 = 7,960 parameters.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(feature_shape), 10),
        nn.ReLU(),
        nn.Linear(10, num_classes),
    )


@register("mlp")
def mlp(feature_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """A wider MLP: inputs -> hidden -> hidden -> num_classes, ReLU between."""
    h = cfg.hidden
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(feature_shape), h),
        nn.ReLU(),
        nn.Linear(h, h),
        nn.ReLU(),
        nn.Linear(h, num_classes),
    )


def _image_side(feature_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) for image-like data; flat vectors must be square (784 -> 1x28x28)."""
    if len(feature_shape) == 3:
        return feature_shape  # type: ignore[return-value]
    if len(feature_shape) == 2:
        return (1, *feature_shape)  # type: ignore[return-value]
    n = math.prod(feature_shape)
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"model.name=cnn needs square images; features of shape {feature_shape} are not")
    return (1, side, side)


class LeNet(nn.Module):
    """LeNet-5 style: two conv + pool stages, then three dense layers. Works from 8x8 up."""

    def __init__(self, chw: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = chw
        self.chw = chw
        # 'same' padding keeps small inputs (8x8 digits) valid through both pools.
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 16 * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.chw)
        return self.classifier(self.features(x))


@register("cnn")
def cnn(feature_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """LeNet-style CNN; flat square feature vectors are reshaped to 1xHxW."""
    return LeNet(_image_side(feature_shape), num_classes)


@register("gpt")
def gpt(feature_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    """The decoder-only transformer of :mod:`training.gpt`: ``feature_shape`` is ``(block_size,)``,
    ``num_classes`` the vocabulary size, and ``cfg`` the GPT config's [model] section
    (:class:`training.lm_config.GPTModelConfig`); it is trained by :mod:`training.lm_loop`."""
    from training.gpt import GPT, GPTShape

    if not hasattr(cfg, "n_layer"):
        raise ValueError('model.name: "gpt" trains on token shards; start from conf/train/gpt_char.toml')
    m = cfg
    return GPT(GPTShape(num_classes, feature_shape[0], m.n_layer, m.n_head, m.n_embd, m.dropout, m.bias))  # type: ignore[attr-defined]


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Submodules FSDP shards as separate units: every module that owns parameters directly.

    Kept here (not in the loop) because which layers form a unit is a property of the model.
    """
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
