"""Bad input gets a clear ValueError/TypeError naming the argument and the value."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import gradhealth as gh


@pytest.fixture(scope="module")
def model():
    return gh.models.deep_mlp(2, width=8, input_dim=4, num_classes=3)


X = np.zeros((8, 4), dtype="float32")
Y = np.zeros(8, dtype="int32")
LOSS = "sparse_categorical_crossentropy"


def test_not_a_model():
    with pytest.raises(TypeError, match="Argument `model` must be a keras.Model.*Received"):
        gh.checkup("model.keras", X, Y, loss=LOSS)


def test_unbuilt_model():
    m = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="must be built.*built=False"):
        gh.checkup(m, X, Y, loss=LOSS)


def test_no_trainable_weights(model):
    m = gh.models.deep_mlp(2, width=8, input_dim=4, num_classes=3)
    m.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        gh.checkup(m, X, Y, loss=LOSS)


def test_batch_size_mismatch(model):
    with pytest.raises(ValueError, match=r"same number of examples.*x.shape=\(8, 4\), y.shape=\(7,\)"):
        gh.checkup(model, X, Y[:7], loss=LOSS)


def test_empty_batch(model):
    with pytest.raises(ValueError, match="Argument `x` is an empty batch"):
        gh.checkup(model, X[:0], Y[:0], loss=LOSS)


@pytest.mark.parametrize("bad", [np.array([["a"] * 4] * 8), np.ones((8, 4), dtype=bool),
                                 [[1, 2], [3]]])
def test_wrong_dtypes(model, bad):
    with pytest.raises(TypeError, match="Argument `x`.*Received: x="):
        gh.checkup(model, bad, Y, loss=LOSS)


def test_non_finite_inputs(model):
    x = X.copy()
    x[3, 1] = np.inf
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="Argument `x` contains 2 non-finite"):
        gh.checkup(model, x, Y, loss=LOSS)
    with pytest.raises(ValueError, match="Argument `y` contains 1 non-finite"):
        gh.checkup(model, X, np.array([np.nan] + [0.0] * 7), loss=LOSS)


def test_wrong_feature_shape(model):
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 4\).*x.shape=\(8, 5\)"):
        gh.checkup(model, np.zeros((8, 5), "float32"), Y, loss=LOSS)


def test_unknown_and_missing_loss(model):
    with pytest.raises(ValueError, match="not a known Keras loss name.*Received: loss='mse2'"):
        gh.checkup(model, X, Y, loss="mse2")
    with pytest.raises(ValueError, match="Argument `loss` is required.*Received: loss=None"):
        gh.checkup(model, X, Y)
    with pytest.raises(TypeError, match="Received: loss=3"):
        gh.checkup(model, X, Y, loss=3)
    with pytest.raises(ValueError, match="single loss"):
        gh.checkup(model, X, Y, loss=["mse", "mse"])


def test_targets_that_do_not_fit_the_loss_give_a_value_error(model):
    with pytest.raises(ValueError, match="Computing the loss.*failed"):
        gh.checkup(model, X, np.zeros((8, 7, 2), "float32"), loss="mse")


def test_invalid_thresholds(model):
    with pytest.raises(ValueError, match="vanishing_ratio"):
        gh.checkup(model, X, Y, loss=LOSS, thresholds={"vanishing_ratio": -1})
    with pytest.raises(TypeError, match="thresholds"):
        gh.checkup(model, X, Y, loss=LOSS, thresholds="strict")


@pytest.mark.parametrize("kwargs,match", [({"depth": 0}, "`depth`"), ({"width": 2.5}, "`width`"),
                                          ({"normalization": "group"}, "`normalization`"),
                                          ({"activation": "sigmoidd"}, "`activation`"),
                                          ({"kernel_initializer": "he"}, "`kernel_initializer`")])
def test_model_builder_arguments(kwargs, match):
    args = {"depth": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        gh.models.deep_mlp(**args)
    with pytest.raises(ValueError, match="`kind`"):
        gh.models.demo_network("tanh")
