"""Tests for gradhealth.course.experiments.grid and summarize, and course.clipping."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pandas as pd
import pytest

from gradhealth.callbacks import GradientHealthMonitor
from gradhealth.course import experiments as E
from gradhealth.course.clipping import compare_clipping
from gradhealth.course.plots import init_plots
from gradhealth.course.plots.init_plots import layer_activations
from gradhealth.init.propagation import variance_propagation
from gradhealth.models import deep_mlp

SMALL = dict(activations=["tanh", "relu"], initializers=["glorot_uniform", "he_normal"],
             depths=[2, 5], seeds=[0, 1], width=16, progress=False)


@pytest.fixture(scope="module")
def small(digits_module):
    x, y = digits_module
    return E.grid(x=x, y=y, **SMALL)


@pytest.fixture(scope="module")
def digits_module():
    from gradhealth.data import digits_batch

    return digits_batch(64)


def test_grid_is_tidy_and_complete(small):
    assert list(small.columns[:5]) == ["activation", "initializer", "depth", "seed", "layer"]
    assert len(small) == 2 * 2 * 2 * (2 + 5)
    keys = small[["activation", "initializer", "depth", "seed"]].drop_duplicates()
    assert len(keys) == 16
    assert list(small["activation"].unique()) == ["tanh", "relu"]  # argument order kept
    assert (small["kernel_grad_norm"] > 0).all()


def test_grid_agrees_with_variance_propagation(small, digits_module):
    x, y = digits_module
    ref = variance_propagation("tanh", "he_normal", depth=5, width=16, x=x, y=y, seeds=1)
    got = small[(small.activation == "tanh") & (small.initializer == "he_normal")
                & (small.depth == 5) & (small.seed == 1)]
    for col in ("activation_variance", "gradient_variance", "kernel_grad_norm"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-5)


@pytest.mark.slow  # a course experiment: TensorFlow (the course's backend) run only
def test_executor_and_eager_give_the_same_table(small, digits_module):
    x, y = digits_module
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = E.grid(x=x, y=y, executor=pool, **SMALL)
    pd.testing.assert_frame_equal(threaded, small)
    eager = E.grid(["tanh"], ["he_normal"], depths=[5], seeds=[1], width=16, x=x, y=y,
                   compiled=False, progress=False)
    same = small[(small.activation == "tanh") & (small.initializer == "he_normal")
                 & (small.depth == 5) & (small.seed == 1)]
    for col in ("activation_variance", "kernel_grad_norm"):
        np.testing.assert_allclose(eager[col], same[col], rtol=1e-4)


def test_summarize_verdicts(digits_module):
    x, y = digits_module
    df = E.grid(["sigmoid", "relu"], ["glorot_uniform", "he_normal"], depths=[12], x=x, y=y,
                progress=False)
    s = E.summarize(df).set_index(["activation", "initializer"])
    assert s.loc[("sigmoid", "glorot_uniform"), "verdict"] == "vanishing"
    assert s.loc[("relu", "he_normal"), "verdict"] == "healthy"
    first = df[(df.activation == "sigmoid") & (df.initializer == "glorot_uniform")]
    expected = first["kernel_grad_norm"].iloc[0] / first["kernel_grad_norm"].iloc[-1]
    assert s.loc[("sigmoid", "glorot_uniform"), "gradient_ratio"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="gradient_flow"):
        E.summarize(pd.DataFrame({"a": [1]}))


def test_custom_measure_and_progress_bar():
    def measure(activation, initializer, depth, seed):
        return {"score": depth * 10 + seed}

    df = E.grid(["relu"], ["he_normal", "orthogonal"], depths=[1, 3], seeds=[0, 2],
                measure=measure, progress=True)
    assert len(df) == 8
    assert sorted(df["score"]) == [10, 10, 12, 12, 30, 30, 32, 32]


def test_training_measure(digits_module):
    df = E.grid(["relu"], ["he_normal"], depths=[2], measure="training", epochs=1,
                progress=False)
    assert len(df) == 1
    assert {"final_loss", "val_loss", "val_accuracy", "seconds"} <= set(df.columns)
    assert 0.0 <= df["val_accuracy"].iloc[0] <= 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="Valid names") as e:
        E.grid(["relu", "swoosh"], progress=False)
    assert "sigmoid" in str(e.value)
    with pytest.raises(ValueError, match="Valid names"):
        E.grid(["relu"], ["kaiming"], progress=False)
    with pytest.raises(ValueError, match="measure"):
        E.grid(["relu"], ["he_normal"], depths=[2], measure="accuracy", progress=False)
    with pytest.raises(ValueError, match="depths"):
        E.grid(["relu"], ["he_normal"], depths=[], progress=False)
    with pytest.raises(ValueError, match="depths"):
        E.grid(["relu"], ["he_normal"], depths=[0], progress=False)
    with pytest.raises(TypeError, match="executor"):
        E.grid(["relu"], ["he_normal"], depths=[2], executor="pool", progress=False)


def test_compare_clipping_loss_after_is_the_trained_weights_loss():
    """With a zero learning rate the weights never move, so ``loss_after`` must equal the MSE of
    the freshly built network, computed here in float64 NumPy; the baseline comparison of
    notebook 3 rests on this column."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")

    def build():
        return deep_mlp(2, width=8, input_dim=8, num_classes=1, activation="tanh", seed=0)

    table, norms = compare_clipping(build, x, y, lambda: keras.optimizers.SGD(0.0), "mse",
                                    {"none": None, "global_norm": {"method": "global_norm",
                                                                   "max_norm": 1.0}},
                                    batch_size=32)
    pred = keras.ops.convert_to_numpy(build()(x)).astype(np.float64)
    expected = float(np.mean((pred - y.astype(np.float64)) ** 2))
    assert table["loss_after"].to_numpy() == pytest.approx([expected, expected], rel=1e-5)
    assert table["steps_to_nan"].isna().all() and list(norms.columns) == ["none", "global_norm"]


def test_compare_clipping_reproduces_a_monitored_fit():
    """compare_clipping trains with its own loop (one compiled gradient function for all runs);
    the run without clipping must be the run ``model.fit`` makes under a watching monitor: the
    same pre-clip global norm at every step, the same running-mean loss and the same weights,
    and a clipped run must clip (its later norms differ, its first equals the unclipped one)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.normal(size=(96, 1)).astype("float32")

    def build():
        return deep_mlp(3, width=8, input_dim=8, num_classes=1, activation="tanh", seed=0)

    def sgd():
        return keras.optimizers.SGD(0.05, momentum=0.9)

    table, norms = compare_clipping(build, x, y, sgd, "mse",
                                    {"none": None, "global_norm": {"method": "global_norm",
                                                                   "max_norm": 0.5}},
                                    epochs=2, batch_size=32)
    model = build()
    model.compile(optimizer=sgd(), loss="mse")
    monitor = GradientHealthMonitor(every=1, on_nonfinite="warn")
    model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0, callbacks=[monitor])
    per_step = monitor.history.groupby("step").agg(loss=("loss", "first"),
                                                   global_norm=("global_norm", "first"))
    assert len(norms) == len(per_step) == 6
    assert norms["none"].to_numpy() == pytest.approx(per_step["global_norm"].to_numpy(), rel=1e-4)
    assert table.loc[0, "final_loss"] == pytest.approx(float(per_step["loss"].iloc[-1]), rel=1e-4)
    pred = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    fitted = float(np.mean((pred - y.astype(np.float64)) ** 2))
    assert table.loc[0, "loss_after"] == pytest.approx(fitted, rel=1e-4)
    assert norms["global_norm"].iloc[0] == pytest.approx(norms["none"].iloc[0], rel=1e-6)
    assert not np.allclose(norms["global_norm"].iloc[1:], norms["none"].iloc[1:], rtol=1e-3)


def test_layer_activations_follow_the_variance_rule():
    """Linear layers with W ~ N(0, scale^2 / width) multiply the variance by scale^2 per layer."""
    acts = layer_activations(6, 0.8, "linear", width=256, batch=2000, seed=0)
    ratios = [acts[k + 1].var() / acts[k].var() for k in range(5)]
    assert np.allclose(ratios, 0.64, rtol=0.1)
    with pytest.raises(ValueError, match="depth"):
        layer_activations(0, 1.0)
    with pytest.raises(ValueError, match="weight_scale"):
        layer_activations(3, float("nan"))


def test_depth_scale_explorer_falls_back_to_none_without_a_live_session(monkeypatch):
    """Executed/exported notebooks have no widget front-end: the explorer returns None there (the
    notebook then draws the static figure); with widgets forced on it is a slider widget."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv(init_plots.WIDGETS_ENV, raising=False)
    assert init_plots.depth_scale_explorer() is None
    monkeypatch.setenv(init_plots.WIDGETS_ENV, "0")
    monkeypatch.setenv("JPY_SESSION_NAME", "live.ipynb")
    assert init_plots.depth_scale_explorer() is None
    monkeypatch.setenv(init_plots.WIDGETS_ENV, "1")
    widget = init_plots.depth_scale_explorer(depth=7)
    assert [c.description for c in widget.children[:3]] == ["depth", "W scale", "activation"]
    assert widget.children[0].value == 7
