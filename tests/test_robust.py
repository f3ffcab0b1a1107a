"""Tests for gradhealth.models.robust: structure, a float64 NumPy forward reference, gradient health."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradhealth.core.knowledge import matched_initializer
from gradhealth.diagnosis import checkup
from gradhealth.models import (
    classification_loss,
    deep_mlp,
    robust_cnn,
    robust_mlp,
    robust_optimizer,
)
from gradhealth.optim import ClippingOptimizer


@pytest.mark.parametrize("activation, expected", [
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), ("gelu", "he_normal"),
    ("elu", "he_normal"), ("silu", "he_normal"), ("selu", "lecun_normal"),
    ("tanh", "glorot_uniform"), ("sigmoid", "glorot_uniform"), (keras.activations.relu, "he_normal"),
])
def test_matched_initializer(activation, expected):
    assert matched_initializer(activation) == expected


def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("normalization, norm_type", [
    ("layer", keras.layers.LayerNormalization), ("batch", keras.layers.BatchNormalization),
    (None, None)])
def test_structure(normalization, norm_type):
    model = robust_mlp(depth=6, width=8, normalization=normalization)
    dense = _layers_of(model, keras.layers.Dense)
    assert [d.name for d in dense] == [f"hidden_{i}" for i in range(1, 7)] + ["output"]
    assert len(_layers_of(model, keras.layers.Add)) == 5
    norms = [layer for layer in model.layers if "norm" in layer.name]
    if norm_type is None:
        assert norms == []
    else:
        assert len(norms) == 6 and all(isinstance(n, norm_type) for n in norms)
    # He normal is what ReLU needs: every hidden kernel uses it.
    assert all(isinstance(d.kernel_initializer, keras.initializers.HeNormal) for d in dense[:-1])
    assert model.output_shape == (None, 10)


def test_plain_variant_has_no_skips_and_matched_init():
    model = robust_mlp(depth=4, width=8, activation="selu", normalization=None, residual=False)
    assert _layers_of(model, keras.layers.Add) == []
    hidden = _layers_of(model, keras.layers.Dense)[:-1]
    assert all(isinstance(d.kernel_initializer, keras.initializers.LecunNormal) for d in hidden)


def test_seeded_builds_are_identical_and_seeds_differ():
    a, b, c = robust_mlp(4, 8, seed=3), robust_mlp(4, 8, seed=3), robust_mlp(4, 8, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def _numpy_forward(model, x, depth, eps=1e-3):
    """Slow float64 reference of the pre-activation residual MLP with layer normalization."""
    def dense(name, h):
        kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(name).get_weights())
        return h @ kernel + bias

    def layer_norm(name, h):
        gamma, beta = (np.asarray(w, np.float64) for w in model.get_layer(name).get_weights())
        mu = h.mean(axis=-1, keepdims=True)
        var = h.var(axis=-1, keepdims=True)
        return (h - mu) / np.sqrt(var + eps) * gamma + beta

    h = dense("hidden_1", np.asarray(x, np.float64))
    for i in range(2, depth + 1):
        h = h + dense(f"hidden_{i}", np.maximum(layer_norm(f"norm_{i}", h), 0.0))
    return dense("output", np.maximum(layer_norm("norm_out", h), 0.0))


def test_forward_matches_float64_numpy_reference():
    model = robust_mlp(depth=4, width=6, input_dim=5, num_classes=3, seed=1)
    rng = np.random.default_rng(0)
    # Non-trivial gamma/beta so the reference checks them too.
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    x = rng.normal(size=(7, 5)).astype("float32")
    got = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, _numpy_forward(model, x, 4), rtol=1e-4, atol=1e-4)


def test_residual_blocks_are_identity_when_branches_are_zero():
    model = robust_mlp(depth=5, width=6, input_dim=5, num_classes=3)
    for i in range(2, 6):
        layer = model.get_layer(f"hidden_{i}")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    shallow = robust_mlp(depth=1, width=6, input_dim=5, num_classes=3)
    for name in ("hidden_1", "norm_out", "output"):
        shallow.get_layer(name).set_weights(model.get_layer(name).get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(shallow(x)), rtol=1e-5, atol=1e-6)


def test_deep_robust_network_is_healthy_where_plain_sigmoid_vanishes(digits):
    x, y = digits
    loss = classification_loss()
    plain = checkup(deep_mlp(20, 32, "sigmoid", "glorot_uniform"), x, y, loss=loss)
    robust = checkup(robust_mlp(20, 32), x, y, loss=loss)
    assert plain.status == "vanishing"
    assert robust.status == "healthy"
    # The identity path keeps the first layer's gradient within 100x of the largest layer's.
    norms = robust.layers["grad_norm"].to_numpy()
    assert norms[0] > norms.max() / 100


def test_robust_cnn_shapes_and_health(digits):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)
    model = robust_cnn(blocks=3, filters=8)
    assert model.output_shape == (None, 10)
    assert len(_layers_of(model, keras.layers.Add)) == 3
    assert checkup(model, images[:32], y[:32], loss=classification_loss()).status == "healthy"


def test_robust_optimizer_clips_through_the_toolkit():
    opt = robust_optimizer(learning_rate=0.01, clipnorm=2.0)
    assert isinstance(opt, ClippingOptimizer)
    assert opt.method == "global_norm" and opt.max_norm == 2.0
    plain = robust_optimizer(clipnorm=None)
    assert isinstance(plain, keras.optimizers.Adam)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 0}, "depth"), ({"width": -1}, "width"), ({"normalization": "group"}, "normalization"),
    ({"activation": "no_such_act"}, "activation"), ({"kernel_initializer": "nope"},
                                                     "kernel_initializer"),
    ({"seed": -1}, "seed"),
])
def test_robust_mlp_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        robust_mlp(**{"depth": 3, **kwargs})


def test_robust_cnn_and_optimizer_argument_errors():
    with pytest.raises(ValueError, match="input_shape"):
        robust_cnn(input_shape=(8, 8))
    with pytest.raises(ValueError, match="blocks"):
        robust_cnn(blocks=0)
    with pytest.raises(ValueError, match="clipnorm"):
        robust_optimizer(clipnorm=0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        robust_optimizer(learning_rate=-1.0)
