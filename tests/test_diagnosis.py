"""core.diagnosis on hand-made statistics tables (no model, no backend)."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

import gradhealth as gh
from gradhealth import Thresholds, diagnose
from gradhealth.core import diagnosis
from gradhealth.core.stats import tensor_stats


def table(norms, dead=None, nonfinite=None, connected=None) -> pd.DataFrame:
    """One kernel variable per layer with the given gradient norms."""
    rows = []
    for i, n in enumerate(norms):
        g = np.full((4, 4), n / 4.0)  # norm of a 4x4 constant matrix = 4 * value
        if dead is not None and dead[i]:
            g[:, : int(round(4 * dead[i]))] = 0.0
        if nonfinite is not None and nonfinite[i]:
            g[0, 0] = np.nan
        s = tensor_stats(g, np.ones((4, 4)))
        rows.append({"layer": f"l{i + 1}", "variable": "kernel", "path": f"l{i + 1}/kernel",
                     "shape": (4, 4), "size": 16, **s,
                     "connected": True if connected is None else connected[i]})
    return pd.DataFrame(rows)


def test_healthy_network():
    r = diagnose(table([0.5, 0.4, 0.3, 0.6]))
    assert r.status == "healthy"
    assert r.score == 100.0
    assert r.recommendations == []
    assert "healthy" in r.findings[0]


def test_vanishing_by_ratio_to_largest_layer():
    r = diagnose(table([1e-9, 1e-6, 1e-3, 1.0]))
    assert list(r.layers["status"]) == ["vanishing", "vanishing", "healthy", "healthy"]
    assert r.status == "vanishing"
    # decades beyond the ratio threshold (1e-3 x max = 1e-3): 6 and 3
    assert r.layers["decades_beyond"].iloc[0] == pytest.approx(6.0)
    assert r.layers["decades_beyond"].iloc[1] == pytest.approx(3.0)
    expected_credit = [0.5 * max(0, 1 - 6 / 6), 0.5 * (1 - 3 / 6), 1, 1]
    assert r.score == pytest.approx(100 * np.mean(expected_credit), abs=0.05)
    assert "l1" in r.findings[0] and "vanish" in r.findings[0]


def test_vanishing_by_absolute_norm():
    r = diagnose(table([1e-8, 1e-8, 1e-8]))
    assert r.status == "vanishing"


def test_exploding_absolute_and_relative_to_output():
    assert diagnose(table([5e3, 4e3, 3e3])).status == "exploding"
    r = diagnose(table([50.0, 1.0, 0.01]))  # grew 5000x backwards from the output
    assert list(r.layers["status"]) == ["exploding", "healthy", "healthy"]
    assert any(rec.category == "clipping" for rec in r.recommendations)


def test_dead_layer_and_underflow_rule():
    r = diagnose(table([0.3, 0.3, 0.3], dead=[0, 1.0, 0]))
    assert list(r.layers["status"]) == ["healthy", "dead", "healthy"]
    assert r.status == "dead"
    # A layer whose whole gradient underflowed to 0 behind vanishing layers is vanishing.
    r = diagnose(table([0.0, 1e-12, 1.0]))
    assert list(r.layers["status"]) == ["vanishing", "vanishing", "healthy"]
    assert any("underflowed" in f for f in r.findings)


def test_nonfinite_dominates_and_caps_score():
    r = diagnose(table([0.3, 0.3, 0.3], nonfinite=[0, 1, 0]))
    assert r.status == "nonfinite"
    assert r.score <= 50
    assert any(rec.category == "data" for rec in r.recommendations)


def test_unused_layers_are_reported_not_scored():
    r = diagnose(table([0.3, 0.0, 0.3], connected=[True, False, True]))
    assert list(r.layers["status"]) == ["healthy", "unused", "healthy"]
    assert r.score == 100.0
    assert any("no gradient" in f for f in r.findings)


def test_thresholds_change_the_verdict():
    t = table([1e-4, 1.0])
    assert diagnose(t).status == "vanishing"
    assert diagnose(t, Thresholds(vanishing_ratio=1e-5)).status == "healthy"


def test_recommendations_use_context():
    ctx = {"activations": {f"l{i}": "sigmoid" for i in range(1, 4)}, "depth": 30,
           "has_normalization": False, "has_residual": False}
    r = diagnose(table([1e-9, 1e-5, 1.0]), context=ctx)
    cats = [rec.category for rec in r.recommendations]
    assert cats[0] == "activation" and "sigmoid" in r.recommendations[0].action
    assert {"normalization", "residual", "initializer"} <= set(cats)
    assert r.recommendations[0].params == {"activation": "relu"}
    ctx2 = dict(ctx, activations={f"l{i}": "relu" for i in range(1, 4)}, has_normalization=True,
                has_residual=True)
    cats2 = [rec.category
             for rec in diagnose(table([1e-9, 1e-5, 1.0]), context=ctx2).recommendations]
    assert "activation" not in cats2 and "residual" not in cats2 and "normalization" not in cats2


def test_every_recommendation_has_a_known_category_and_reference():
    ctx = {"activations": {"l1": "relu"}, "initializers": {"l1": "RandomNormal"}}
    for norms, kw in (([5e3, 4e3], {}), ([0.3, 0.3], {"dead": [1, 0]}),
                      ([0.3, 0.3], {"nonfinite": [1, 0]}), ([1e-9, 1.0], {})):
        for rec in diagnose(table(norms, **kw), context=ctx).recommendations:
            assert rec.category in diagnosis.CATEGORIES
            assert rec.reference and rec.reason and rec.action
            assert str(rec).startswith(f"[{rec.category}]")


# --- model-aware rules: roles, blocks, time profiles, recommendations that fit the model ----

def test_attention_query_key_are_not_depth_evidence():
    t = table([1e-6, 0.5, 0.4, 0.6])
    assert diagnose(t).status == "vanishing"  # read as plain kernels, l1 vanishes
    ctx = {"roles": {"l1": "attention_qk"}}
    r = diagnose(t, context=ctx)
    assert r.status == "healthy"
    assert r.layers.set_index("layer").loc["l1", "role"] == "attention_qk"
    assert any("query/key" in f for f in r.findings)


def test_normalized_kernels_have_no_absolute_exploding_limit():
    t = table([5e3, 4e3, 1.0])  # 5e3 > exploding_norm for a plain kernel
    assert diagnose(t).status == "exploding"
    ctx = {"roles": {"l1": "scale_invariant", "l2": "scale_invariant"}}
    r = diagnose(t, context=ctx)
    assert r.status == "healthy"
    # the ratio rule still applies within the family: l1 grows 1e4x past l2
    t2 = table([5e4, 4.0, 1.0])
    assert diagnose(t2, context=ctx).status == "exploding"


def test_blocks_are_judged_as_a_whole():
    t = table([1e-5, 1.0, 1.0])
    assert diagnose(t).layers["status"].iloc[0] == "vanishing"
    r = diagnose(t, context={"blocks": {"l1": "b1", "l2": "b1", "l3": "b2"}})
    assert list(r.layers["status"]) == ["healthy"] * 3
    assert r.layers["signal"].iloc[0] == pytest.approx(np.hypot(1e-5, 1.0))


def test_vanishing_finding_reports_decay_per_block():
    r = diagnose(table([1e-9, 1e-6, 1e-3, 1.0]))
    sentence = next(f for f in r.findings if "vanish" in f)
    assert "x0.001 per block" in sentence and "1e-09 times" in sentence


def _profile(first_to_max, gated, length=100):
    decay = first_to_max ** (1 / (length - 1))
    return {"measured": True, "cell": "LSTMCell" if gated else "SimpleRNNCell", "gated": gated,
            "layer": "rnn", "length": length, "profile": [decay ** (length - 1 - i)
                                                         for i in range(length)],
            "first_to_max": first_to_max, "first_to_last": first_to_max,
            "decay_per_step": decay}


def test_ungated_recurrence_vanishes_through_time_and_gated_is_reported_only():
    t = table([0.5, 0.4])
    r = diagnose(t, context={"time_profiles": {"l1": _profile(1e-6, gated=False)}})
    assert r.status == "vanishing" and bool(r.layers["through_time"].iloc[0])
    assert any("through time" in f and "per step" in f for f in r.findings)
    assert [rec.category for rec in r.recommendations] == ["architecture"]
    r = diagnose(t, context={"time_profiles": {"l1": _profile(1e-6, gated=True)}})
    assert r.status == "healthy" and any("gates learn" in f for f in r.findings)
    r = diagnose(t, context={"time_profiles": {"l1": _profile(0.5, gated=False)}})
    assert r.status == "healthy"


def test_recommendations_never_propose_what_the_model_has():
    t = table([1e-9, 1e-5, 1.0])
    base = {"activations": {f"l{i}": "relu" for i in range(1, 4)},
            "initializers": {f"l{i}": "HeNormal" for i in range(1, 4)}, "depth": 30,
            "has_normalization": False, "has_residual": False}
    cats = [rec.category for rec in diagnose(t, context=base).recommendations]
    assert "initializer" in cats  # matched inits: calibrate with LSUV instead of re-init
    assert all("he_normal" not in rec.params.get("kernel_initializer", "")
               for rec in diagnose(t, context=base).recommendations)
    opt = [r for r in diagnose(t, context=base).recommendations if r.category == "optimizer"]
    assert opt and "when compiling" in opt[0].action  # no optimizer compiled: said as such
    adam = dict(base, optimizer="Adam", learning_rate=1e-3)
    assert "optimizer" not in [r.category for r in diagnose(t, context=adam).recommendations]
    unknown = dict(base, has_residual=None)  # a custom layer may hold a skip connection
    assert "residual" not in [r.category for r in diagnose(t, context=unknown).recommendations]
    clipped = dict(base, optimizer="SGD", learning_rate=0.1, clipping="clipnorm=1.0")
    ex = diagnose(table([5e3, 4e3, 1.0]), context=clipped).recommendations
    assert "clipping" not in [r.category for r in ex]
    assert any(r.category == "learning_rate" and "0.1" in r.action for r in ex)


def test_recommendations_name_layers_and_cite_a_paper():
    ctx = {"activations": {"l1": "relu", "l2": "relu"}, "initializers": {"l1": "RandomNormal"}}
    for norms, kw in (([5e3, 4e3], {}), ([0.3, 0.3], {"dead": [1, 0]}),
                      ([0.3, 0.3], {"nonfinite": [1, 0]}), ([1e-9, 1.0], {})):
        for rec in diagnose(table(norms, **kw), context=ctx).recommendations:
            assert rec.layers and rec.reference, rec


def test_score_meaning_is_part_of_the_report():
    r = diagnose(table([0.5, 0.4]))
    assert "not accuracy" in r.score_meaning or "nothing about accuracy" in r.score_meaning
    assert r.score_meaning in r.to_markdown() and r.score_meaning in r.to_html()


def test_exploding_finding_of_normalized_kernels_reports_their_ratio():
    """Batch normalization with no residual path makes ||g||/||W|| grow toward the input at
    initialization (Yang et al. 2019): a 60-layer Dense-BN-ReLU stack is read as exploding by
    that ratio, and the finding must report the ratio it was judged by, not a gradient norm
    'above the limit' that the norm is not above."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))
    h = inputs
    for _ in range(60):
        h = keras.layers.Dense(64, use_bias=False)(h)
        h = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    rng = np.random.default_rng(0)
    report = gh.checkup(model, rng.normal(size=(64, 32)).astype("float32"),
                        rng.integers(0, 10, 64),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert report.status == "exploding"
    finding = next(f for f in report.findings if f.startswith("Gradients explode"))
    assert "judged by ||g||/||W||" in finding and "largest norm" not in finding
    exploding = report.layers[report.layers["status"] == "exploding"]
    top = exploding["signal"].max()
    assert f"the ratio is {top:.3g}" in finding
    assert (exploding["role"] == "scale_invariant").all()
