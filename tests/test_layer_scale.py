"""Residual branches multiplied by a LayerScale are not read as vanishing.

ConvNeXt and CaiT multiply each residual branch by a learnable per-channel scale that starts
at 1e-6 (Touvron et al. 2021), so every weight inside the branch gets a gradient a million
times smaller than the residual stream's, by design. keras.applications.ConvNeXtTiny read as
"exploding"/"vanishing" with score 71 on a healthy initialization; the layers inside such
branches now have the role ``layer_scaled`` and are not depth evidence, and the residual sums,
written ``h + branch`` (an ``ops.add`` node, not an ``Add`` layer), count as residual adds.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import gradhealth as gh


class LayerScale(keras.layers.Layer):
    """``x * gamma``, gamma a learnable vector starting at ``init`` (as in ConvNeXt)."""

    def __init__(self, init, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init))

    def call(self, x):
        return x * self.gamma


def scaled_residual_net(blocks=12, width=64, init=1e-6, scale=True):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))
    h = keras.layers.Dense(width, name="stem")(inputs)
    for i in range(blocks):
        b = keras.layers.LayerNormalization(name=f"block{i}_norm")(h)
        b = keras.layers.Dense(4 * width, activation="gelu", name=f"block{i}_up")(b)
        b = keras.layers.Dense(width, name=f"block{i}_down")(b)
        if scale:
            b = LayerScale(init, name=f"block{i}_scale")(b)
        h = h + b
    h = keras.layers.LayerNormalization(name="final_norm")(h)
    outputs = keras.layers.Dense(10, name="head")(h)
    return keras.Model(inputs, outputs)


def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 32)).astype("float32"), rng.integers(0, 10, 64)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_layer_scaled_branches_are_not_depth_evidence():
    model = scaled_residual_net()
    x, y = batch()
    report = gh.checkup(model, x, y, loss=LOSS)
    roles = dict(zip(report.layers["layer"], report.layers["role"], strict=True))
    assert report.status == "healthy" and report.score == 100
    assert {roles[f"block{i}_{k}"] for i in range(12) for k in ("up", "down")} == {"layer_scaled"}
    assert roles["stem"] == "kernel" and roles["head"] == "kernel"
    assert roles["block0_norm"] == "normalization" and roles["block0_scale"] == "vector"
    assert report.context["has_residual"] is True  # `h + b` is an ops.add node
    assert any("LayerScale" in f for f in report.findings)
    # The branch gradients really are ~1e-6 of the stream's: the role is what keeps them apart.
    norms = dict(zip(report.layers["layer"], report.layers["grad_norm"], strict=True))
    assert norms["block5_down"] < 1e-4 * norms["stem"]


@pytest.mark.parametrize("blocks", [4, 12])
def test_without_layer_scale_the_branches_are_judged(blocks):
    """The same network with no LayerScale: the branch kernels are ordinary depth evidence."""
    model = scaled_residual_net(blocks=blocks, scale=False)
    x, y = batch()
    report = gh.checkup(model, x, y, loss=LOSS)
    roles = dict(zip(report.layers["layer"], report.layers["role"], strict=True))
    assert roles["block0_up"] in ("kernel", "scale_invariant")
    assert report.status == "healthy"


def test_the_plot_sets_layers_that_are_not_depth_evidence_apart():
    """Their bars are 1e-6 of the others by design: drawn pale, with their own legend entry."""
    from matplotlib.colors import to_hex

    from gradhealth.report.plots import STATUS_COLORS

    model = scaled_residual_net(blocks=4)
    x, y = batch()
    report = gh.checkup(model, x, y, loss=LOSS)
    fig = report.plot()
    ax = fig.axes[0]
    colors = [to_hex(bar.get_facecolor()) for bar in ax.patches]
    for color, role in zip(colors, report.layers["role"], strict=True):
        judged = role in ("kernel", "scale_invariant", "recurrent", "embedding")
        assert color == (STATUS_COLORS["healthy"] if judged
                         else STATUS_COLORS["not depth evidence"]), role
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"healthy",
                                                                   "not depth evidence"}
