"""Tests for gradhealth.lsuv_init (Mishkin & Matas 2015) on every model kind and backend."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from gradhealth.init.lsuv import LSUV_MIN_BATCH, lsuv_init

TOL = 0.1


@pytest.fixture()
def x():
    return np.random.default_rng(0).standard_normal((128, 20)).astype("float32") * 3 + 1


def _numpy_dense_forward(model, x, activation):
    """float64 reference: pre-activation variance of every Dense layer of a plain MLP."""
    h = x.astype(np.float64)
    out = []
    for layer in model.layers:
        w, b = (np.asarray(v, np.float64) for v in layer.get_weights())
        z = h @ w + b
        out.append(np.var(z))
        h = activation(z)
    return out


@pytest.mark.parametrize("name,fn", [("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0))])
def test_mlp_layers_reach_target_variance(x, name, fn):
    model = keras.Sequential([keras.Input((20,))] +
                             [keras.layers.Dense(32, activation=name) for _ in range(4)] +
                             [keras.layers.Dense(5)])
    history = lsuv_init(model, x, target_var=1.0, tol=TOL)
    assert list(history.columns) == ["layer", "iteration", "variance", "scale", "converged"]
    assert history.groupby("layer")["converged"].last().all()
    # Hidden layers apply `name`; the output layer is linear (its activation is unused here).
    variances = _numpy_dense_forward(model, x, fn)
    assert len(variances) == 5
    for v in variances:
        assert abs(v - 1.0) < TOL
    assert history.attrs["skipped"] == {}


def test_functional_relu_mlp_other_target(x):
    inp = keras.Input((20,))
    h = inp
    for _ in range(3):
        h = keras.layers.Dense(16)(h)
        h = keras.layers.Activation("relu")(h)
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    history = lsuv_init(model, x, target_var=0.5, tol=0.05, orthogonal=False)
    assert history["layer"].nunique() == 4
    dense = [lay for lay in model.layers if isinstance(lay, keras.layers.Dense)]
    probe = keras.Model(model.input, [lay.output for lay in dense])
    for out in probe(x):
        assert abs(float(np.var(keras.ops.convert_to_numpy(out))) - 0.5) < 0.05


def test_small_cnn_with_batch_norm_reports_the_skip():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 10, 10, 3)).astype("float32")
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Conv2D(8, 3, name="c2")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    with pytest.warns(UserWarning, match="bn"):
        history = lsuv_init(model, x)
    assert "bn" in history.attrs["skipped"]
    assert list(dict.fromkeys(history["layer"])) == ["c1", "c2", "head"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("c1", "c2", "head")])
    for out in probe(x):
        assert abs(float(np.var(keras.ops.convert_to_numpy(out))) - 1.0) < TOL


@pytest.mark.parametrize("layer,shape", [(keras.layers.Conv1D(4, 3), (12, 2)),
                                         (keras.layers.Conv3D(3, 2), (4, 4, 4, 1))])
def test_conv1d_and_conv3d(layer, shape):
    x = np.random.default_rng(2).standard_normal((16, *shape)).astype("float32")
    model = keras.Sequential([keras.Input(shape), layer])
    lsuv_init(model, x)
    assert abs(float(np.var(keras.ops.convert_to_numpy(model(x)))) - 1.0) < TOL


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.head = keras.layers.Dense(3)  # created first, called last
        self.body = keras.layers.Dense(24, activation="tanh")

    def call(self, inputs):
        return self.head(self.body(inputs))


def test_subclassed_model_in_call_order_and_left_unpatched(x):
    model = _Sub()
    model(x[:2])
    history = lsuv_init(model, x)
    assert list(dict.fromkeys(history["layer"])) == [model.body.name, model.head.name]
    assert "call" not in model.body.__dict__ and "call" not in model.head.__dict__
    w, b = (np.asarray(v, np.float64) for v in model.body.get_weights())
    z = x.astype(np.float64) @ w + b
    assert abs(np.var(z) - 1.0) < TOL
    w2, b2 = (np.asarray(v, np.float64) for v in model.head.get_weights())
    assert abs(np.var(np.tanh(z) @ w2 + b2) - 1.0) < TOL


class _Scale(keras.layers.Layer):
    """A custom layer with a kernel: y = x @ kernel."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 6), initializer="ones")

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.kernel)


def test_user_designated_layer_is_calibrated(x):
    custom = _Scale(name="custom")
    model = keras.Sequential([keras.Input((20,)), custom, keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match="custom"):
        default = lsuv_init(model, x)
    assert "custom" in default.attrs["skipped"]
    history = lsuv_init(model, x, layers=["custom"])
    assert "custom" in set(history["layer"]) and history.attrs["skipped"] == {}
    out = keras.ops.convert_to_numpy(custom(x))
    assert abs(float(np.var(out)) - 1.0) < TOL


def test_bad_input(x):
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="tol"):
        lsuv_init(model, x, tol=0)
    with pytest.raises(ValueError, match="tol"):
        lsuv_init(model, x, tol=-0.1)
    with pytest.raises(ValueError, match="target_var"):
        lsuv_init(model, x, target_var=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        lsuv_init(model, x, max_iter=0)
    with pytest.raises(ValueError, match=str(LSUV_MIN_BATCH)):
        lsuv_init(model, x[: LSUV_MIN_BATCH - 1])
    bad = x.copy()
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        lsuv_init(model, bad)
    with pytest.raises(TypeError, match="keras.Model"):
        lsuv_init(keras.layers.Dense(3), x)
    norm_only = keras.Sequential([keras.Input((20,)), keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match="no layer to calibrate"):
        lsuv_init(norm_only, x)
    with pytest.raises(ValueError, match="not in model"):
        lsuv_init(model, x, layers=["nope"])
    with pytest.raises(ValueError, match="kernel"):
        lsuv_init(norm_only, x, layers=[norm_only.layers[0]])


def test_not_converged_is_reported(x):
    # A huge bias keeps the variance of x @ W + b above the target whatever the kernel scale.
    layer = keras.layers.Dense(8, bias_initializer=keras.initializers.RandomNormal(stddev=10.0))
    model = keras.Sequential([keras.Input((20,)), layer])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = lsuv_init(model, x, max_iter=3)
    assert history.attrs["not_converged"] == [layer.name]
    assert len(history) == 3
    assert any("did not reach" in str(w.message) for w in caught)
