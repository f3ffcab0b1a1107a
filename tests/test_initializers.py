"""Tests for gradhealth.init.initializers: variance formulas vs draws, variance propagation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradhealth.core.variance import expected_weight_variance
from gradhealth.init import initializers as I
from gradhealth.init import propagation as P


def test_measured_weight_variance_matches_formulas():
    table = I.weight_variance_table(shapes=((256, 256), (3, 3, 32, 64)))
    assert len(table) == len(I.available_initializers()) * 2
    np.testing.assert_allclose(table["ratio"], 1.0, atol=0.05)
    row = table[(table.initializer == "he_normal") & (table.fan_in == 288)].iloc[0]
    assert row["expected_variance"] == pytest.approx(2 / 288)


def test_sample_weights_is_the_keras_initializer():
    w = I.sample_weights("glorot_uniform", (64, 32), seed=3)
    ref = keras.initializers.GlorotUniform(seed=3)((64, 32))
    np.testing.assert_allclose(w, keras.ops.convert_to_numpy(ref), rtol=1e-6)
    limit = np.sqrt(6 / 96)
    assert np.abs(w).max() <= limit


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ValueError, match="he_normal") as e:
        I.get_initializer("xavier")
    assert "xavier" in str(e.value)
    with pytest.raises(ValueError, match="Valid names"):
        I.weight_variance_table(["he_normal", "kaiming"])


def test_mlp_params_are_deep_mlp_weights():
    from gradhealth.models import deep_mlp

    params = P.mlp_params(4, 16, "he_normal", input_dim=64, num_classes=10, seed=5)
    model = deep_mlp(4, 16, "relu", "he_normal", seed=5)
    for p, w in zip(params, model.get_weights(), strict=True):
        np.testing.assert_allclose(p, w, rtol=1e-6)


def test_probe_agrees_with_gradient_stats_and_numpy_forward(digits):
    from gradhealth import gradient_stats
    from gradhealth.models import deep_mlp

    x, y = digits
    params = P.mlp_params(5, 32, "glorot_uniform", 64, 10, seed=1)
    out = P.make_mlp_probe(keras.activations.tanh, 5)(params, x, y)
    model = deep_mlp(5, 32, "tanh", "glorot_uniform", seed=1)
    stats = gradient_stats(model, x, y,
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref = stats[(stats.variable == "kernel") & (stats.layer != "output")]["grad_norm"].to_numpy()
    np.testing.assert_allclose(out["kernel_grad_norm"], ref, rtol=1e-4)
    # float64 NumPy forward pass as the slow reference for the variances.
    h = x.astype(np.float64)
    for i in range(5):
        z = h @ params[2 * i] + params[2 * i + 1]
        h = np.tanh(z)
        assert out["preactivation_variance"][i] == pytest.approx(np.var(z), rel=1e-4)
        assert out["activation_variance"][i] == pytest.approx(np.var(h), rel=1e-4)


def test_he_relu_50_layers_keeps_variance_while_random_normal_collapses_it():
    # One finite-width network fluctuates by about a factor of 2 over 50 layers (Hanin & Rolnick
    # 2018), so the claim is checked on the mean over 8 networks.
    kwargs = dict(depth=50, width=256, seeds=range(8), batch_size=128)
    he = P.variance_propagation("relu", "he_normal", **kwargs)
    mean = he.groupby("layer")["activation_variance"].mean().to_numpy()
    assert 0.5 <= mean[-1] / mean[0] <= 2.0
    small = P.variance_propagation("relu", "random_normal", **kwargs)
    mean_small = small.groupby("layer")["activation_variance"].mean().to_numpy()
    assert mean_small[-1] / mean_small[0] < 1e-6
    # The mean-field prediction says exactly flat for He + ReLU.
    pred = he[he.seed == 0]["predicted_preactivation_variance"].to_numpy()
    np.testing.assert_allclose(pred[1:], pred[0], rtol=1e-6)


def test_mean_field_prediction_tracks_a_wide_tanh_network(digits):
    x, y = digits
    df = P.variance_propagation("tanh", "glorot_normal", depth=6, width=512, x=x, y=y)
    np.testing.assert_allclose(df["preactivation_variance"],
                               df["predicted_preactivation_variance"], rtol=0.15)


def test_sigmoid_gradient_variance_decays_towards_the_input(digits):
    x, y = digits
    df = P.variance_propagation("sigmoid", "glorot_uniform", depth=10, width=64, x=x, y=y)
    g = df["gradient_variance"].to_numpy()
    assert g[0] < 1e-6 * g[-1]


def test_variance_propagation_bad_input(digits):
    x, y = digits
    with pytest.raises(ValueError, match="Valid names"):
        P.variance_propagation("relu", "kaiming")
    with pytest.raises(ValueError, match="Valid names"):
        P.variance_propagation("relux", "he_normal")
    with pytest.raises(ValueError, match="non-finite"):
        bad = x.copy()
        bad[0, 0] = np.nan
        P.variance_propagation(x=bad, y=y, depth=2)
    with pytest.raises(ValueError, match="seeds"):
        P.variance_propagation(seeds=[], depth=2)


def test_expected_variance_formula_is_core_formula():
    assert I.weight_variance_table(["lecun_normal"], shapes=((100, 7),))["expected_variance"][0] == \
        pytest.approx(expected_weight_variance("lecun_normal", (100, 7)))


def test_activation_variance_scaling_gain_and_draws():
    relu = I.ActivationVarianceScaling("relu", seed=0)
    assert relu.scale == pytest.approx(2.0, rel=1e-4)  # He
    assert I.ActivationVarianceScaling("selu").scale == pytest.approx(1.0, rel=1e-3)  # LeCun
    w = keras.ops.convert_to_numpy(I.ActivationVarianceScaling("tanh", seed=1)((512, 512)))
    # E[tanh(z)^2] for z ~ N(0, 1) by a float64 Riemann sum as the reference.
    z = np.linspace(-12, 12, 240001)
    second = float(np.sum(np.tanh(z) ** 2 * np.exp(-z**2 / 2)) * (z[1] - z[0]) / np.sqrt(2 * np.pi))
    assert np.var(w) == pytest.approx(1 / (512 * second), rel=0.03)
    with pytest.raises(ValueError, match="Valid names"):
        I.ActivationVarianceScaling("relux")


def test_activation_variance_scaling_save_load_round_trip(tmp_path):
    init = I.ActivationVarianceScaling("tanh", distribution="uniform", seed=3)
    model = keras.Sequential([keras.Input((8,)),
                              keras.layers.Dense(4, activation="tanh", kernel_initializer=init)])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.layers[0].kernel_initializer
    assert isinstance(restored, I.ActivationVarianceScaling)
    assert restored.get_config() == init.get_config()
    assert restored.scale == pytest.approx(init.scale)
    np.testing.assert_allclose(loaded.get_weights()[0], model.get_weights()[0])
    clone = I.ActivationVarianceScaling.from_config(init.get_config())
    assert clone.get_config()["activation"] == "tanh"
