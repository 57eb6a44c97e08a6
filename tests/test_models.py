"""Model registry and the original article's exact network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training import models
from training.config import ModelConfig
from training.models import available_models, build_model, register


def test_mlp784_is_exactly_784_10_relu_10() -> None:
    m = build_model("mlp784", (28, 28), 10)
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(784, 10), (10, 10)]
    assert sum(p.numel() for p in m.parameters()) == 784 * 10 + 10 + 10 * 10 + 10
    # Forward equals relu(x W1^T + b1) W2^T + b2, computed independently in NumPy.
    x = torch.randn(5, 784)
    w1, b1, w2, b2 = (t.detach().numpy().astype(np.float64) for t in m.parameters())
    xn = x.numpy().astype(np.float64)
    expected = np.maximum(xn @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(m(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # Image-shaped input is flattened the same way.
    np.testing.assert_allclose(m(x.reshape(5, 28, 28)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(28, 28), (784,), (1, 28, 28), (8, 8), (64,)])
def test_cnn_accepts_images_and_square_flat_vectors(shape: tuple[int, ...]) -> None:
    m = build_model("cnn", shape, 10)
    n = int(np.prod(shape))
    assert m(torch.randn(3, n)).shape == (3, 10)


def test_cnn_rejects_non_square_flat_features() -> None:
    with pytest.raises(ValueError, match="square"):
        build_model("cnn", (30,), 3)


def test_wider_mlp_uses_hidden_and_data_dims() -> None:
    m = build_model("mlp", (16,), 4, ModelConfig(name="mlp", hidden=32))
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(16, 32), (32, 32), (32, 4)]


def test_adding_a_model_is_one_decorated_function() -> None:
    @register("test_linear_only")
    def linear_only(feature_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(feature_shape)), num_classes))

    try:
        assert "test_linear_only" in available_models()
        assert build_model("test_linear_only", (6,), 3)(torch.zeros(2, 6)).shape == (2, 3)
        with pytest.raises(ValueError, match="twice"):
            register("test_linear_only")(linear_only)
    finally:
        models._REGISTRY.pop("test_linear_only", None)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="mlp784"):
        build_model("resnet", (784,), 10)
