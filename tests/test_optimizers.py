"""Tests for gradhealth.course.optimizers and its plot."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.core.stats import combine_norms, robust_norm
from gradhealth.course.optimizers import (
    CURVE_COLUMNS,
    DEFAULT_LEARNING_RATES,
    HARD_NETWORK,
    OPTIMIZER_NAMES,
    compare_optimizers,
    hard_network,
    make_optimizer,
    steps_to_target,
)
from gradhealth.diagnosis import layer_gradients
from gradhealth.models import classification_loss, deep_mlp


@pytest.mark.parametrize("name, cls", [
    ("sgd", keras.optimizers.SGD), ("momentum", keras.optimizers.SGD),
    ("nesterov", keras.optimizers.SGD), ("rmsprop", keras.optimizers.RMSprop),
    ("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
    ("lion", keras.optimizers.Lion)])
def test_make_optimizer(name, cls):
    opt = make_optimizer(name)
    assert isinstance(opt, cls)
    config = opt.get_config()
    assert config["learning_rate"] == pytest.approx(DEFAULT_LEARNING_RATES[name])
    if cls is keras.optimizers.SGD:
        assert config["momentum"] == (0.0 if name == "sgd" else 0.9)
        assert config["nesterov"] == (name == "nesterov")
    assert make_optimizer(name, 0.5).get_config()["learning_rate"] == pytest.approx(0.5)


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="name"):
        make_optimizer("adagrad")
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer("adam", 0.0)


def _reference_steps_to_target(steps, losses, target):
    hits = [s for s, v in zip(steps, losses, strict=True) if not math.isnan(v) and
            not math.isinf(v) and v <= target]
    return min(hits) if hits else None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 5), st.just(float("nan")), st.just(float("inf"))),
                min_size=1, max_size=20), st.floats(0.01, 5))
def test_steps_to_target_matches_reference(losses, target):
    steps = [10 * i for i in range(len(losses))]
    assert steps_to_target(steps, losses, target) == _reference_steps_to_target(
        steps, losses, target)


def test_steps_to_target_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        steps_to_target([0, 1], [1.0], 0.5)


def _data(n_train=96, n_test=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + 2 * (x[:, 1] > 0).astype("int32")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _builder():
    return deep_mlp(3, 8, "relu", "glorot_uniform", input_dim=12, num_classes=4, seed=5)


@pytest.fixture(scope="module")
def comparison():
    xtr, ytr, xte, yte = _data()
    return compare_optimizers(xtr, ytr, xte, yte, model_builder=_builder,
                              optimizers=["sgd", "adam"], steps=20, batch_size=16,
                              log_every=10, target_loss=1.3, seed=1)


def test_table_and_curves_shape(comparison):
    table = comparison.table()
    assert list(table["optimizer"]) == ["sgd", "adam"]
    assert {"steps_to_target", "final_loss", "test_accuracy", "first_last_ratio_start",
            "first_last_ratio_end", "diverged"} <= set(table.columns)
    curves = comparison.curves()
    assert set(CURVE_COLUMNS) <= set(curves.columns)
    for run in comparison.runs:
        assert list(run.curve["step"]) == [0, 10, 20]
        assert 0.0 <= run.test_accuracy <= 1.0 and not run.diverged
    assert comparison.layers == ("hidden_1", "hidden_3")


def test_same_start_for_every_optimizer(comparison):
    """Same seeds: every run starts from the same weights, so its step-0 row is identical."""
    a, b = (run.curve.iloc[0] for run in comparison.runs)
    for column in CURVE_COLUMNS:
        assert a[column] == pytest.approx(b[column], rel=1e-6)


def test_step0_gradients_match_an_independent_checkup(comparison):
    xtr, ytr, _, _ = _data()
    model = _builder()
    grads = layer_gradients(model, xtr[:16], ytr[:16], loss=classification_loss())
    first = combine_norms([robust_norm(g) for p, g in grads.items() if p.startswith("hidden_1/")])
    last = combine_norms([robust_norm(g) for p, g in grads.items() if p.startswith("hidden_3/")])
    row = comparison.runs[0].curve.iloc[0]
    assert row["grad_first"] == pytest.approx(first, rel=1e-4)
    assert row["grad_last"] == pytest.approx(last, rel=1e-4)
    assert row["first_last_ratio"] == pytest.approx(first / last, rel=1e-4)
    # The initial loss is the mean cross-entropy over the whole training set.
    pred = keras.ops.convert_to_numpy(model(xtr)).astype(np.float64)
    logp = pred - np.log(np.exp(pred - pred.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - pred.max(1, keepdims=True)
    assert row["train_loss"] == pytest.approx(-logp[np.arange(len(ytr)), ytr].mean(), rel=1e-4)


def test_training_changes_the_loss_and_steps_to_target_is_consistent(comparison):
    for run in comparison.runs:
        curve = run.curve
        assert curve["train_loss"].iat[-1] != curve["train_loss"].iat[0]
        assert run.steps_to_target == steps_to_target(list(curve["step"]),
                                                      list(curve["train_loss"]), 1.3)


def test_reproducible():
    xtr, ytr, xte, yte = _data()
    kwargs = dict(model_builder=_builder, optimizers=["momentum"], steps=10, batch_size=16,
                  log_every=5, seed=2)
    a = compare_optimizers(xtr, ytr, xte, yte, **kwargs).table()
    b = compare_optimizers(xtr, ytr, xte, yte, **kwargs).table()
    pd.testing.assert_frame_equal(a, b)


def test_json_and_plot(comparison, tmp_path):
    path = comparison.save(str(tmp_path / "cmp.json"))
    data = json.loads(open(path).read())
    assert [r["optimizer"] for r in data["table"]] == ["sgd", "adam"]
    assert len(data["curves"]) == 6
    fig = comparison.plot()
    assert len(fig.axes) == 3
    assert fig.axes[0].get_yscale() == "log"
    assert comparison.best() in ("sgd", "adam")


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizers": ["adam", "adam"]}, "optimizers"),
    ({"optimizers": ["adagrad"]}, "optimizers"),
    ({"optimizers": []}, "optimizers"),
    ({"steps": 10, "log_every": 3}, "log_every"),
    ({"batch_size": 1000}, "batch_size"),
    ({"learning_rates": {"lion": 1e-4}}, "learning_rates"),
    ({"steps": 0}, "steps"),
])
def test_argument_errors(kwargs, match):
    xtr, ytr, xte, yte = _data()
    with pytest.raises(ValueError, match=match):
        compare_optimizers(xtr, ytr, xte, yte, model_builder=_builder,
                           **{"optimizers": ["adam"], "steps": 10, "log_every": 5, **kwargs})


def test_all_default_names_are_known():
    assert set(OPTIMIZER_NAMES) == set(DEFAULT_LEARNING_RATES)


def test_hard_network_is_named_after_its_activation():
    """Issue 11: the ReLU network was titled "hard_sigmoid_mlp"; its name now says what it is."""
    model = hard_network(seed=0)
    activations = {getattr(layer, "activation", None).__name__ for layer in model.layers
                   if getattr(layer, "activation", None) is not None} - {"linear"}
    assert activations == {HARD_NETWORK["activation"]}
    assert HARD_NETWORK["activation"] in model.name and "sigmoid" not in model.name
