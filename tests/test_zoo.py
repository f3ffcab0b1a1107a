"""The labelled diagnosis zoo: every verdict right, findings that match the numbers, and no
recommendation that proposes what the model already has (run on every backend; the
keras.applications cases are slow and run on TensorFlow only, see ``benchmarks/diagnosis_zoo.py``
for all three backends)."""

from __future__ import annotations

import functools
import re

import keras
import numpy as np
import pytest
from zoo_cases import CASES, case

import gradhealth as gh
from gradhealth.adapters.keras_compat import walk_layers

PARAMS = [pytest.param(c.name, marks=[pytest.mark.slow] if c.slow else [], id=c.name)
          for c in CASES]


@functools.cache
def run(name: str):
    model, x, y, loss = case(name).build()
    return model, gh.checkup(model, x, y, loss=loss)


@pytest.mark.parametrize("name", PARAMS)
def test_zoo_verdict(name):
    c = case(name)
    _, report = run(name)
    assert report.status == c.expected, (report.status, report.findings)
    flagged = report.layers[report.layers["status"] == c.expected]["layer"]
    text = " ".join(report.findings)
    for part in c.names:
        assert any(part in layer for layer in flagged), (part, list(flagged))
        assert part in text
    if c.expected == "healthy":
        assert report.score == 100.0 and report.recommendations == []


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _layer(model, name):
    for layer in walk_layers(model):
        if layer.name == name.rsplit("/", 1)[-1]:
            return layer
    return None


@pytest.mark.parametrize("name", PARAMS)
def test_no_recommendation_proposes_what_the_model_has(name):
    """Checked against the Keras model itself, independently of the checkup's context."""
    model, report = run(name)
    every = walk_layers(model)
    kinds = {type(layer).__name__ for layer in every}
    optimizer = getattr(model, "optimizer", None)
    for rec in report.recommendations:
        assert rec.layers, rec  # every recommendation names the layers it concerns
        assert rec.reference, rec
        layers = [_layer(model, n) for n in rec.layers]
        p = rec.params
        if rec.category == "normalization":
            assert not kinds & {"BatchNormalization", "LayerNormalization", "GroupNormalization",
                                "RMSNormalization", "UnitNormalization"}, rec
        if rec.category == "residual":
            assert "Add" not in kinds, rec
        if "activation" in p:
            for layer in layers:
                current = keras.activations.serialize(layer.activation) if hasattr(
                    layer, "activation") else None
                assert p["activation"] != current, (rec, layer.name)
        if "kernel_initializer" in p:
            for layer in layers:
                assert _snake(type(layer.kernel_initializer).__name__) != p["kernel_initializer"]
        if p.get("optimizer") == "adam":
            assert not isinstance(optimizer, keras.optimizers.Adam), rec
        if rec.category == "clipping" and optimizer is not None:
            assert optimizer.clipnorm is None and optimizer.global_clipnorm is None, rec
        if "recurrent_cell" in p:
            for layer in layers:
                assert type(layer).__name__.lower() != p["recurrent_cell"] + "cell", rec


NUMBER = r"([0-9.]+(?:e[-+]?[0-9]+)?)"


@pytest.mark.parametrize("name", [c.name for c in CASES if c.expected == "vanishing"])
def test_a_vanish_finding_shows_decay(name):
    _, report = run(name)
    text = [f for f in report.findings if "vanish" in f.lower()]
    assert text
    for sentence in text:
        factors = [float(v) for v in re.findall(r"x" + NUMBER + r" per", sentence)]
        ratios = [float(v) for v in re.findall(NUMBER + r" times\b", sentence)]
        assert factors and all(0 < f < 1 for f in factors), sentence
        assert ratios and all(r < 1 for r in ratios), sentence


def test_simple_rnn_vanishes_through_time_with_a_profile_in_every_rendering():
    model, report = run("simple_rnn_160")
    (name, prof), = report.time_profiles.items()
    assert prof["measured"] and prof["length"] == 160 and not prof["gated"]
    values = np.asarray(prof["profile"])
    assert values[0] < 1e-3 * values.max() and prof["decay_per_step"] < 1
    row = report.layers.set_index("layer").loc[name]
    assert row["status"] == "vanishing" and row["through_time"]
    assert any(r.category == "architecture" for r in report.recommendations)
    assert "Gradient through time" in report.to_markdown()
    page = report.to_html()
    assert "gradient vs timestep" in page and report.score_meaning in page
    fig = report.plot_time()
    assert fig.axes[0].get_yscale() == "log"


@pytest.mark.parametrize("name", ["lstm_40", "gru_40"])
def test_gated_cells_get_a_profile_but_no_verdict_through_time(name):
    _, report = run(name)
    (prof,) = report.time_profiles.values()
    assert prof["measured"] and prof["gated"]
    assert report.status == "healthy"
    assert any("gates learn" in f for f in report.findings)


def test_models_without_recurrent_layers_pay_no_extra_probe():
    _, report = run("relu_he_mlp_30")
    assert report.time_profiles == {}


def test_report_says_the_score_is_gradient_health_not_accuracy():
    _, report = run("relu_he_mlp_30")
    assert "not accuracy" in report.score_meaning.lower() or "nothing about accuracy" in \
        report.score_meaning
    assert report.score_meaning in report.to_markdown()


def test_saved_report_rediagnoses_to_the_same_verdicts(tmp_path):
    _, report = run("simple_rnn_160")
    import json

    data = json.loads(report.to_json())
    again = gh.diagnose(report.variables, report.thresholds, data["context"])
    assert again.status == report.status
    assert list(again.layers["status"]) == list(report.layers["status"])


def test_transformer_query_key_are_not_depth_evidence():
    _, report = run("post_ln_transformer_2")
    qk = report.layers[report.layers["role"] == "attention_qk"]
    assert len(qk) == 4 and (qk["status"] == "healthy").all()
    # The first block's query/key gradients are orders of magnitude below its value kernel's:
    # that is the near-uniform softmax at initialization, not vanishing (Xiong et al. 2020).
    layers = report.layers.set_index("layer")
    assert layers.loc["b1_attention/query", "grad_norm"] < 1e-2 * layers.loc[
        "b1_attention/value", "grad_norm"]


def test_batchnorm_kernels_are_judged_by_gradient_to_weight_ratio():
    model, report = run("cnn_batchnorm")
    si = report.layers[report.layers["role"] == "scale_invariant"]
    assert list(si["layer"]) == [f"conv{i}" for i in range(1, 7)]
    for _, row in si.iterrows():
        kernel = _layer(model, row["layer"]).kernel
        w = np.linalg.norm(keras.ops.convert_to_numpy(kernel).astype(np.float64))
        assert row["kernel_weight_norm"] == pytest.approx(w, rel=1e-5)
        assert row["relative_grad"] == pytest.approx(row["kernel_grad_norm"] / w, rel=1e-6)
    assert report.context["roles"]["classifier"] == "kernel"


def test_nested_normalization_is_found_in_custom_layers():
    _, report = run("keras_io_transformer")
    assert len(report.context["normalization_layers"]) == 4
    assert report.context["has_residual"] is None  # a custom call() may add a skip path
    assert "TransformerBlock" in report.context["custom_layers"]


def test_embedding_rows_are_the_batch_tokens_and_their_norm_is_exact():
    # The checkup reduces the touched rows on the device (one number reaches the host); the
    # reference is the float64 norm of the same rows pulled to NumPy.
    model, report = run("embedding_text")
    _, x, _, _ = case("embedding_text").build()
    info = report.context["embedding_rows"]["tokens"]
    rows = np.unique(x)
    table = keras.ops.convert_to_numpy(_layer(model, "tokens").embeddings).astype(np.float64)
    assert info["rows"] == rows.size and info["of"] == table.shape[0]
    assert info["source"] == "token ids in x"
    assert info["weight_norm"] == pytest.approx(np.linalg.norm(table[rows]), rel=1e-5)
