"""Tests for gradhealth.treatment: prescribe (driven by the findings) and treat (verified)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import keras
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradhealth.core.diagnosis import Recommendation
from gradhealth.data import load_digits_split
from gradhealth.diagnosis import checkup
from gradhealth.models import classification_loss, deep_mlp, demo_network, robust_mlp
from gradhealth.optim import ClippingOptimizer
from gradhealth.treatment import PRIORITY, TreatmentPlan, prescribe, treat


@dataclass
class FakeReport:
    status: str = "vanishing"
    score: float = 20.0
    findings: list[str] = field(default_factory=lambda: ["gradients vanish"])
    recommendations: list[Recommendation] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def rec(category, params=None, layers=("hidden_1",), reason="measured", reference="paper"):
    return Recommendation(category, f"do {category}", reason, tuple(layers), reference,
                          dict(params or {}))


ALL = [rec("clipping", {"clipping": "global_norm", "clip_value": 1.0}),
       rec("optimizer", {"optimizer": "adam"}),
       rec("residual", {"residual": True}),
       rec("learning_rate", {"learning_rate_factor": 0.1}),
       rec("normalization", {"normalization": "batch"}),
       rec("initializer", {"kernel_initializer": "he_normal"}),
       rec("activation", {"activation": "relu"}),
       rec("data")]


def test_healthy_report_gives_an_empty_plan():
    plan = prescribe(FakeReport(status="healthy", score=100.0, recommendations=[]))
    assert plan.empty and plan.steps == ()
    assert "no change needed" in str(plan)
    assert plan.model_changes == {} and plan.apply_to({"depth": 3}) == {"depth": 3}


@settings(max_examples=40, deadline=None)
@given(st.permutations(ALL), st.integers(1, len(ALL)))
def test_steps_follow_priority_whatever_the_input_order(recs, n):
    plan = prescribe(FakeReport(recommendations=list(recs[:n])))
    cats = [s.category for s in plan.steps]
    assert cats == sorted(cats, key=PRIORITY.__getitem__)
    assert [s.order for s in plan.steps] == list(range(1, len(plan.steps) + 1))
    # Only what the report recommends (plus an initializer matched to a new activation).
    allowed = {r.category for r in recs[:n]} | ({"initializer"} if any(
        r.category == "activation" for r in recs[:n]) else set())
    assert set(cats) == allowed


def test_same_category_is_merged_with_layers_joined():
    plan = prescribe(FakeReport(recommendations=[
        rec("initializer", {"kernel_initializer": "he_normal"}, ("hidden_2",), "exploding"),
        rec("initializer", {"kernel_initializer": "glorot_uniform"}, ("hidden_1", "hidden_2"),
            "vanishing")]))
    (step,) = plan.steps
    assert step.layers == ("hidden_2", "hidden_1")
    assert step.change == {"kernel_initializer": "he_normal"}
    assert "exploding" in step.reason and "vanishing" in step.reason


@pytest.mark.parametrize("activation, init", [("relu", "he_normal"), ("selu", "lecun_normal")])
def test_activation_change_brings_its_matched_initializer(activation, init):
    plan = prescribe(FakeReport(recommendations=[rec("activation", {"activation": activation})]))
    assert [s.category for s in plan.steps] == ["activation", "initializer"]
    assert plan.steps[1].change == {"kernel_initializer": init}
    assert plan.steps[1].source == "follows from step 1"
    assert plan.model_changes == {"activation": activation, "kernel_initializer": init}


def test_mismatched_recommended_initializer_is_corrected():
    plan = prescribe(FakeReport(recommendations=[
        rec("initializer", {"kernel_initializer": "glorot_uniform"}),
        rec("activation", {"activation": "relu"})]))
    assert plan.model_changes["kernel_initializer"] == "he_normal"


def test_learning_rate_factor_becomes_a_concrete_rate():
    plan = prescribe(FakeReport(recommendations=[rec("learning_rate",
                                                     {"learning_rate_factor": 0.1})],
                                context={"learning_rate": 0.5}))
    assert plan.training_changes["learning_rate"] == pytest.approx(0.05)
    assert "0.5 -> 0.05" in plan.steps[0].action


def test_overrides_change_only_prescribed_steps():
    recs = [rec("normalization", {"normalization": "batch"})]
    plan = prescribe(FakeReport(recommendations=recs), overrides={"normalization": "layer",
                                                                  "residual": True})
    assert plan.model_changes == {"normalization": "layer"}
    assert "chosen" in plan.steps[0].action
    with pytest.raises(ValueError, match="overrides"):
        prescribe(FakeReport(recommendations=recs), overrides={"dropout": 0.5})


def test_plan_optimizer_applies_factor_and_clipping():
    plan = prescribe(FakeReport(recommendations=[
        rec("learning_rate", {"learning_rate_factor": 0.1}),
        rec("clipping", {"clipping": "global_norm", "clip_value": 2.0})]))
    opt = plan.optimizer(learning_rate=0.01)
    assert isinstance(opt, ClippingOptimizer) and opt.max_norm == 2.0
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(1e-3)
    plain = prescribe(FakeReport(recommendations=[rec("optimizer", {"optimizer": "rmsprop"})]))
    assert isinstance(plain.optimizer(), keras.optimizers.RMSprop)


def test_plan_exports():
    plan = prescribe(FakeReport(recommendations=ALL))
    frame = plan.to_frame()
    assert list(frame["order"]) == list(range(1, len(plan.steps) + 1))
    json.dumps(plan.to_dict())
    assert "<table>" in plan._repr_html_()
    assert str(plan).count("\n") == len(plan.steps)


def test_prescribe_rejects_non_reports():
    with pytest.raises(TypeError, match="report"):
        prescribe({"status": "vanishing"})


def test_exploding_network_gets_a_different_plan(digits):
    x, y = digits
    report = checkup(demo_network("exploding"), x, y, loss=classification_loss())
    assert report.status == "exploding"
    plan = prescribe(report)
    cats = [s.category for s in plan.steps]
    assert "activation" not in cats  # the ReLUs are not the problem here
    assert {"initializer", "clipping", "learning_rate"} <= set(cats)
    assert cats.index("initializer") < cats.index("clipping")


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def test_sigmoid_network_is_diagnosed_treated_and_verified(split):
    """The done-when, at a depth that trains in seconds on every backend."""
    xtr, ytr, xte, yte = split
    sick = {"depth": 8, "width": 32, "activation": "sigmoid",
            "kernel_initializer": "glorot_uniform"}
    report = checkup(deep_mlp(**sick), xtr[:128], ytr[:128], loss=classification_loss())
    assert report.status == "vanishing"
    plan = prescribe(report, overrides={"normalization": "layer"})
    assert plan.steps[0].category == "activation"
    assert plan.model_changes["activation"] == "relu"
    result = treat(robust_mlp, plan, xtr, ytr, xte, yte, build_kwargs=sick, epochs=3)
    assert result.build_kwargs["activation"] == "relu"
    assert result.initial.status == "healthy"
    assert result.after.status == "healthy" and result.healthy
    assert result.accuracy >= 0.6  # chance is 0.1; the sick network stays near it
    summary = result.summary()
    assert list(summary["status"]) == ["vanishing", "healthy", "healthy"]
    assert summary["spread"].iat[0] > 100 * summary["spread"].iat[2]
    assert len(result.plot().axes) == 2


@pytest.mark.slow
def test_fifty_layer_sigmoid_done_when(split):
    """Issue 5's done-when: 50-layer plain sigmoid -> vanishing -> plan -> healthy, >= 85%."""
    xtr, ytr, xte, yte = split
    sick = {"depth": 50, "activation": "sigmoid", "kernel_initializer": "glorot_uniform"}
    report = checkup(deep_mlp(**sick), xtr[:128], ytr[:128], loss=classification_loss())
    assert report.status == "vanishing"
    plan = prescribe(report, overrides={"normalization": "layer"})
    result = treat(robust_mlp, plan, xtr, ytr, xte, yte, build_kwargs=sick, epochs=3,
                   batch_size=64)
    assert result.after.status == "healthy"
    assert result.accuracy >= 0.85


def test_treat_argument_errors(split):
    xtr, ytr, _, _ = split
    plan = prescribe(FakeReport(recommendations=[rec("activation", {"activation": "relu"})]))
    with pytest.raises(TypeError, match="plan"):
        treat(deep_mlp, {"activation": "relu"}, xtr, ytr)
    with pytest.raises(TypeError, match="model_builder"):
        treat("deep_mlp", plan, xtr, ytr)
    with pytest.raises(ValueError, match="x_test"):
        treat(deep_mlp, plan, xtr, ytr, x_test=xtr)
    with pytest.raises(ValueError, match="epochs"):
        treat(deep_mlp, plan, xtr, ytr, build_kwargs={"depth": 2}, epochs=0)
    with pytest.raises(ValueError, match="builder does not accept"):
        treat(lambda depth: deep_mlp(depth), plan, xtr, ytr, build_kwargs={"depth": 2})
    assert isinstance(plan, TreatmentPlan)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="counts tf.function traces")
def test_treat_traces_its_train_step_once(split):
    """The accuracy metric is built before fit: a variable created in the first trace of the
    train step made TensorFlow trace it a second time (2-3 s in notebook 6)."""
    xtr, ytr, xte, yte = split
    traces = []

    def builder(**kwargs):
        model = robust_mlp(**kwargs)
        step = model.train_step

        def counted(data):
            traces.append(1)
            return step(data)

        model.train_step = counted
        return model

    plan = prescribe(FakeReport(recommendations=[rec("activation", {"activation": "relu"})]))
    result = treat(builder, plan, xtr, ytr, xte, yte, build_kwargs={"depth": 3, "width": 16},
                   epochs=2)
    assert len(traces) == 1
    assert set(result.history) == {"loss", "accuracy"} and len(result.history["accuracy"]) == 2
    assert all(0.0 <= a <= 1.0 for a in result.history["accuracy"])
