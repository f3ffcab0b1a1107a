"""checkup / gradient_stats / layer_gradients on a real backend (run once per backend)."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest

import gradhealth as gh
from gradhealth.core.stats import STAT_COLUMNS, tensor_stats


def numpy_mlp_grads(weights, x, y):
    """Reference gradients of mean squared error for a sigmoid MLP, by hand, in float64."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    acts, pre = [x.astype(np.float64)], []
    for i, (w, b) in enumerate(weights):
        z = acts[-1] @ w + b
        pre.append(z)
        acts.append(sig(z) if i < len(weights) - 1 else z)
    delta = 2.0 * (acts[-1] - y) / y.size  # d mean((out - y)^2) / d out
    grads = []
    for i in range(len(weights) - 1, -1, -1):
        w, _ = weights[i]
        grads.append((acts[i].T @ delta, delta.sum(axis=0)))
        if i:
            s = sig(pre[i - 1])
            delta = (delta @ w.T) * s * (1 - s)
    return grads[::-1]


def test_layer_gradients_match_hand_written_backprop():
    keras.utils.set_random_seed(1)
    model = gh.models.deep_mlp(3, width=8, activation="sigmoid", kernel_initializer="glorot_normal",
                               input_dim=5, num_classes=2, seed=3)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero biases so bias gradients are exercised too
        if hasattr(layer, "bias") and layer.bias is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    grads = gh.layer_gradients(model, x, y, loss="mse")
    weights = [(keras.ops.convert_to_numpy(layer.kernel).astype(np.float64),
                keras.ops.convert_to_numpy(layer.bias).astype(np.float64))
               for layer in model.layers if hasattr(layer, "kernel")]
    ref = numpy_mlp_grads(weights, x, y)
    got = list(grads.values())
    assert list(grads) == [v.path for v in model.trainable_variables]
    for i, (gw, gb) in enumerate(ref):
        np.testing.assert_allclose(got[2 * i], gw, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(got[2 * i + 1], gb, rtol=2e-4, atol=1e-7)


def test_gradient_stats_equal_float64_reference_of_the_gradients(digits, ce_loss):
    model = gh.models.demo_network("sigmoid")
    x, y = digits
    stats = gh.gradient_stats(model, x, y, loss=ce_loss)
    grads = gh.layer_gradients(model, x, y, loss=ce_loss)
    assert list(stats["path"]) == list(grads)
    weights = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables}
    for _, row in stats.iterrows():
        ref = tensor_stats(grads[row["path"]], weights[row["path"]])
        for col in STAT_COLUMNS:
            assert row[col] == pytest.approx(ref[col], rel=1e-6, nan_ok=True), (row["path"], col)
    # The underflow case: first-layer entries are ~1e-20 yet the norm is exact and non-zero.
    first = grads["hidden_1/kernel"].astype(np.float64)
    assert 0 < np.abs(first).max() < 1e-12
    assert stats["grad_norm"].iloc[0] == pytest.approx(np.sqrt(np.sum(first**2)), rel=1e-6)


@pytest.mark.parametrize("kind,expected", [("sigmoid", "vanishing"), ("relu", "healthy"),
                                           ("exploding", "exploding")])
def test_demo_networks_are_diagnosed(kind, expected, digits, ce_loss):
    x, y = digits
    report = gh.checkup(gh.models.demo_network(kind), x, y, loss=ce_loss)
    assert report.status == expected
    assert 0 <= report.score <= 100
    assert (report.score == 100) == (expected == "healthy")
    assert len(report.layers) == (31 if kind != "exploding" else 11)
    assert report.findings
    assert bool(report.recommendations) == (expected != "healthy")


def test_vanishing_report_names_layers_and_recommends_relu(digits, ce_loss):
    x, y = digits
    report = gh.checkup(gh.models.demo_network("sigmoid"), x, y, loss=ce_loss)
    first, last = report.layers["grad_norm"].iloc[0], report.layers["grad_norm"].iloc[-1]
    assert first / last < 1e-6
    assert "hidden_1" in report.findings[0]
    assert report.recommendations[0].category == "activation"
    assert report.context["activations"]["hidden_1"] == "sigmoid"


def test_report_serializations(digits, ce_loss, tmp_path):
    x, y = digits
    report = gh.checkup(gh.models.demo_network("exploding"), x, y, loss=ce_loss)
    d = json.loads(report.to_json())
    assert d["status"] == "exploding" and len(d["layers"]) == len(report.layers)
    md = report.to_markdown()
    assert "| layer" in md and "exploding" in md
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "gradient" in report._repr_html_()
    # The figure shrinks to the page or cell width instead of overflowing it.
    assert all("max-width:100%" in tag for tag in re.findall(r"<img[^>]*>", page))
    for ext in ("json", "html", "md"):
        path = report.save(str(tmp_path / f"r.{ext}"))
        assert (tmp_path / f"r.{ext}").read_text()
        assert path.endswith(ext)
    with pytest.raises(ValueError, match="Received: path="):
        report.save(str(tmp_path / "r.pdf"))


def test_checkup_does_not_change_the_model(digits, ce_loss):
    x, y = digits
    model = gh.models.deep_mlp(4, width=16, normalization="batch", activation="relu")
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]
    gh.checkup(model, x, y, loss=ce_loss)
    after = [keras.ops.convert_to_numpy(v.value) for v in model.variables]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_compiled_loss_is_used_when_loss_is_omitted(digits):
    x, y = digits
    model = gh.models.deep_mlp(3, width=16)
    model.compile(optimizer="adam", loss=gh.models.classification_loss())
    explicit = gh.gradient_stats(model, x, y, loss=gh.models.classification_loss())
    implicit = gh.gradient_stats(model, x, y)
    np.testing.assert_allclose(implicit["grad_norm"], explicit["grad_norm"], rtol=1e-6)
    report = gh.checkup(model, x, y)
    assert report.context["learning_rate"] == pytest.approx(1e-3)


def test_frozen_layer_is_excluded_and_others_still_reported(digits, ce_loss):
    x, y = digits
    model = gh.models.deep_mlp(3, width=16)
    model.get_layer("hidden_2").trainable = False
    stats = gh.gradient_stats(model, x, y, loss=ce_loss)
    assert "hidden_2" not in set(stats["layer"])
    assert list(stats["layer"].unique()) == ["hidden_1", "hidden_3", "output"]


def test_conv_model_and_normalization_context():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=32)
    report = gh.checkup(model, x, y, loss=gh.models.classification_loss())
    assert list(report.layers["layer"]) == ["conv", "bn", "head"]
    assert report.context["has_normalization"] is True
    assert report.layers["n_params"].tolist() == [4 * 9 + 4, 8, 3 * 4 + 3]
