"""The helpers the library's own training loops use to skip traces: same numbers as Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradhealth._internal.training import build_optimizer, evaluate_eagerly
from gradhealth.models import deep_mlp


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 64)).astype("float32"), rng.integers(0, 10, size=n)


def _compiled(seed=0):
    model = deep_mlp(3, 16, seed=seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, metrics=["accuracy"])
    return model, loss


def test_evaluate_eagerly_equals_model_evaluate():
    x, y = _data()
    model, loss = _compiled()
    got_loss, got_acc = evaluate_eagerly(model, x, y, loss)
    want_loss, want_acc = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert got_acc == pytest.approx(want_acc, abs=1e-7)


def test_optimizer_built_before_fit_trains_exactly_as_keras_alone():
    x, y = _data()
    trained = []
    for prebuild in (False, True):
        keras.utils.set_random_seed(0)
        model, _ = _compiled()
        if prebuild:
            build_optimizer(model)
            assert model.optimizer.built
            assert len(model.optimizer.variables) > 1
        model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        trained.append([keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables])
    for a, b in zip(*trained, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_build_optimizer_leaves_uncompiled_and_built_models_alone():
    model = deep_mlp(2, 8)
    build_optimizer(model)  # not compiled: nothing to build
    model, _ = _compiled()
    build_optimizer(model)
    variables = list(model.optimizer.variables)
    build_optimizer(model)  # already built: the same variables
    assert list(model.optimizer.variables) == variables
