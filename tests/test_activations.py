"""Tests for gradhealth.init.activations: Keras functions, autodiff derivatives, measured properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import erf

from gradhealth.course import activation_experiments as AX
from gradhealth.init import activations as A

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0, x)


def _phi(x):
    return np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + erf(x / math.sqrt(2)))


# Closed forms in float64: (f, f').
CLOSED = {
    "sigmoid": (_sig, lambda x: _sig(x) * (1 - _sig(x))),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.2 * x), lambda x: np.where(x > 0, 1.0, 0.2)),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(x)), lambda x: np.where(x > 0, 1.0, np.exp(x))),
    "selu": (lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
             lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x))),
    "gelu": (lambda x: x * _cdf(x), lambda x: _cdf(x) + x * _phi(x)),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * (1 - _sig(x)))),
    "mish": (lambda x: x * np.tanh(_softplus(x)),
             lambda x: np.tanh(_softplus(x)) + x * (1 - np.tanh(_softplus(x)) ** 2) * _sig(x)),
    "softplus": (_softplus, _sig),
}
# Points exactly representable in float32, away from the kink at 0 (where f' is a convention).
POINTS = np.float32(np.linspace(-6, 6, 481) + 0.0078125).astype(np.float64)


def test_catalog_has_the_required_activations():
    assert set(CLOSED) <= set(A.available_activations())


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_function_and_autodiff_derivative_match_closed_forms(name):
    f, df = CLOSED[name]
    np.testing.assert_allclose(A.evaluate(name, POINTS), f(POINTS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(A.derivative(name, POINTS), df(POINTS), rtol=0, atol=1e-6)


def test_swish_is_an_alias_of_silu():
    np.testing.assert_array_equal(A.evaluate("swish", POINTS), A.evaluate("silu", POINTS))


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="relu") as e:
        A.get_activation("relux")
    assert "relux" in str(e.value) and "sigmoid" in str(e.value)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return A.catalog()


def test_catalog_properties_against_closed_forms(table):
    nodes = np.linspace(-12, 12, 240001)
    w = _phi(nodes) * (nodes[1] - nodes[0])
    for name, (f, df) in CLOSED.items():
        row = table.loc[name]
        # Gaussian statistics against a dense float64 Riemann sum of the closed forms.
        assert row["mean_output"] == pytest.approx(float(w @ f(nodes)), abs=1e-4), name
        assert row["second_moment"] == pytest.approx(float(w @ f(nodes) ** 2), abs=1e-4), name
        grid = np.linspace(-10, 10, 20001)
        # SELU's sup f' = scale * alpha is approached as x -> 0-; what f'(0) is at the kink is
        # a backend convention (TensorFlow takes the right branch), so allow one grid step.
        assert row["max_derivative"] == pytest.approx(df(grid).max(), abs=2e-3), name
    assert table.loc["sigmoid", "max_derivative"] == pytest.approx(0.25)
    assert table.loc["sigmoid", "argmax_derivative"] == pytest.approx(0.0, abs=1e-3)
    assert (table.loc["sigmoid", "output_min"], table.loc["sigmoid", "output_max"]) == (0.0, 1.0)
    assert (table.loc["tanh", "output_min"], table.loc["tanh", "output_max"]) == (-1.0, 1.0)
    assert table.loc["relu", "output_max"] == math.inf
    assert table.loc["leaky_relu", "output_min"] == -math.inf
    assert table.loc["elu", "output_min"] == pytest.approx(-1.0, abs=1e-6)


def test_catalog_qualitative_properties(table):
    assert table.loc["tanh", "zero_centred"] and not table.loc["sigmoid", "zero_centred"]
    assert table.loc["relu", "dead_unit_risk"] == "high"
    assert table.loc["relu", "zero_gradient_fraction"] == pytest.approx(0.5, abs=1e-3)
    assert table.loc["leaky_relu", "dead_unit_risk"] == "none"
    assert table.loc["sigmoid", "saturates_left"] and table.loc["sigmoid", "saturates_right"]
    assert not table.loc["leaky_relu", "saturating"]
    assert table.loc["relu", "smoothness"].startswith("C0")
    assert table.loc["elu", "smoothness"].startswith("C1")
    assert table.loc["gelu", "smoothness"].startswith("smooth")
    assert table["self_normalizing"].sum() == 1 and table.loc["selu", "self_normalizing"]
    assert table.loc["selu", "pairs_with"] == "lecun_normal"
    assert table.loc["relu", "pairs_with"] == "he_normal"
    assert table.loc["tanh", "pairs_with"] == "glorot_uniform"
    # Measured cost: relative to relu, positive and finite.
    assert table.loc["relu", "relative_cost"] == pytest.approx(1.0)
    assert (table["relative_cost"] > 0).all() and np.isfinite(table["relative_cost"]).all()


def test_saturation_threshold_matches_closed_form(table):
    # sigmoid'(x) = 0.01 at |x| = 4.59, tanh'(x) = 0.01 at |x| = 2.99.
    assert "4.5" in table.loc["sigmoid", "saturates_where"]
    assert "2.99" in table.loc["tanh", "saturates_where"]


def test_recommend_ranks_by_rules(table):
    deep = A.recommend(depth=50, table=table)
    hidden = deep[deep["role"] == "hidden"]
    assert list(hidden["rank"]) == list(range(1, len(table) + 1))
    assert hidden.iloc[-1]["activation"] == "sigmoid"
    assert (hidden["reason"].str.len() > 0).all()
    assert hidden["score"].is_monotonic_decreasing
    with_bn = A.recommend(depth=50, normalization="batch", table=table)
    rank = lambda df, n: int(df.loc[(df.role == "hidden") & (df.activation == n), "rank"].iloc[0])  # noqa: E731
    assert rank(with_bn, "selu") > rank(deep, "selu")
    # Rectifiers keep the gradient through depth: ReLU ranks above every saturating activation
    # (it was 9th of 10 before), and SELU with batch norm loses its advantage but not to sigmoid.
    for name in ("relu", "leaky_relu", "gelu", "elu"):
        assert rank(deep, name) < rank(deep, "tanh") < rank(deep, "sigmoid")
    assert rank(with_bn, "selu") < rank(with_bn, "sigmoid")
    selu_reason = with_bn[(with_bn.role == "hidden") & (with_bn.activation == "selu")]["reason"]
    assert "overrides" in selu_reason.iloc[0]
    binary = A.recommend(depth=3, task="binary", table=table)
    assert binary.iloc[-1]["activation"] == "sigmoid" and binary.iloc[-1]["role"] == "output"


def test_recommend_follows_the_measured_properties(table):
    # The ranking is derived from the table: give tanh sigmoid's small max derivative and it
    # drops; shallow networks do not pay the depth penalty.
    edited = table.copy()
    edited.loc["tanh", "max_derivative"] = 0.25
    def scores(**kwargs):
        df = A.recommend(**kwargs)
        return df[df.role == "hidden"].set_index("activation")["score"]

    before, after = scores(depth=30, table=table), scores(depth=30, table=edited)
    assert after["tanh"] < before["tanh"] - 2
    assert scores(depth=2, table=table)["sigmoid"] > before["sigmoid"]


def test_recommend_bad_input(table):
    with pytest.raises(ValueError, match="task"):
        A.recommend(task="ranking", table=table)
    with pytest.raises(ValueError, match="normalization"):
        A.recommend(normalization="group", table=table)
    with pytest.raises(ValueError, match="depth"):
        A.recommend(depth=0, table=table)
    with pytest.raises(ValueError, match="Valid names"):
        A.recommend(candidates=["relu", "nope"], table=table)


@pytest.mark.slow  # a course experiment: TensorFlow (the course's backend) run only
def test_gradient_flow_matches_gradient_stats(digits):
    import keras

    from gradhealth import gradient_stats
    from gradhealth.models import deep_mlp

    x, y = digits
    df = AX.gradient_flow(["sigmoid", "relu"], depth=8, x=x, y=y)
    assert list(df.columns) == ["activation", "initializer", "layer", "layer_index",
                                "grad_norm", "relative_norm"]
    assert len(df) == 2 * 9
    model = deep_mlp(8, activation="sigmoid", kernel_initializer="glorot_uniform", seed=0)
    ref = gradient_stats(model, x, y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref = ref[ref["variable"] == "kernel"]["grad_norm"].to_numpy()
    np.testing.assert_allclose(df[df.activation == "sigmoid"]["grad_norm"], ref, rtol=1e-5)
    first = df.groupby("activation")["relative_norm"].first()
    assert first["sigmoid"] < 0.05 * first["relu"]


@pytest.mark.slow  # a course experiment: TensorFlow (the course's backend) run only
def test_performance_ranking_is_ranked_and_complete(digits):
    ranking = AX.performance_ranking(["sigmoid", "relu"], depth=3, epochs=1, seeds=(0,))
    assert list(ranking["rank"]) == [1, 2]
    assert {"activation", "val_accuracy", "final_loss", "health_score", "seconds"} <= set(ranking)
    assert ranking["val_accuracy"].between(0, 1).all()
    assert ranking["health_score"].between(0, 100).all()
    assert ranking["val_accuracy"].is_monotonic_decreasing
