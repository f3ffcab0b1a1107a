"""From diagnosis to treatment: an ordered plan of concrete changes, applied and verified.

The medical analogy of the course, made executable::

    report = gradhealth.diagnosis(model, x, y, loss=loss)        # examine and diagnose
    plan = gradhealth.prescribe(report)                         # prescribe, in order
    result = gradhealth.treat(deep_mlp, plan, x_train, y_train,  # treat: rebuild and retrain
                              build_kwargs={"depth": 50}, x_test=x_test, y_test=y_test)
    result.summary()                                            # re-examine: before / after

:func:`prescribe` turns the report's findings and its :class:`~gradhealth.Recommendation`
objects into :class:`TreatmentStep` s ordered *causes before symptoms* (:data:`PRIORITY`): first
the architecture (activation, then the initializer matched to it, normalization, residual
connections), then optimization (optimizer, learning rate) and last the safety net (clipping).
Only what the diagnosis calls for is prescribed: a healthy report gives an empty plan, an
exploding one gets initializer, learning-rate and clipping changes but keeps its activation.

:func:`treat` rebuilds the network with the plan's changes through any builder that accepts
``deep_mlp``-style keyword arguments (``activation``, ``kernel_initializer``,
``normalization``, ``residual``), trains it with the plan's optimizer settings, and runs the
checkup again on the treated network, so the plan is verified by measurement.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import pandas as pd

from gradhealth._internal.validation import check_positive_float
from gradhealth.core.knowledge import INITIALIZER_SOURCES, matched_initializer
from gradhealth.optim.clipping import ClippingOptimizer

__all__ = ["DEFAULT_LEARNING_RATE", "MODEL_KEYS", "PRIORITY", "TRAINING_KEYS", "TreatmentPlan",
           "TreatmentStep", "prescribe"]

PRIORITY: dict[str, int] = {
    "data": 0,
    "activation": 1,
    "initializer": 2,
    "normalization": 3,
    "residual": 4,
    "optimizer": 5,
    "learning_rate": 6,
    "clipping": 7,
}
"""Order of treatment by category: causes before symptoms. Bad data (NaN/inf inputs) poisons
everything, so it is checked first; the activation sets each layer's derivative, and the
initializer must be chosen *for* that activation (He et al. 2015), so it comes second;
normalization and residual connections change the architecture around them (Ioffe & Szegedy
2015; He et al. 2016); the optimizer and learning rate are tuned for the final architecture;
clipping is the safety net applied last (Pascanu et al. 2013)."""

MODEL_KEYS: tuple[str, ...] = ("activation", "kernel_initializer", "normalization", "residual")
"""Plan changes that rebuild the network (keyword arguments of ``deep_mlp``/``robust_mlp``)."""

TRAINING_KEYS: tuple[str, ...] = ("optimizer", "learning_rate", "learning_rate_factor", "clipping",
                                  "clip_value")
"""Plan changes that affect how the network is trained."""

DEFAULT_LEARNING_RATE: float = 1e-3
"""Learning rate of :func:`treat` before any ``learning_rate_factor`` of the plan: Adam's
default (Kingma & Ba 2015)."""

DEFAULT_EPOCHS: int = 3
"""Training epochs of :func:`treat`: on the 1348 digits training examples a healthy
network reaches over 80% test accuracy in two or three epochs with Adam; an unhealthy one does
not, so a short run already separates them."""

_OPTIMIZERS: dict[str, Callable[[float], keras.optimizers.Optimizer]] = {
    "adam": lambda lr: keras.optimizers.Adam(learning_rate=lr),
    "adamw": lambda lr: keras.optimizers.AdamW(learning_rate=lr),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(learning_rate=lr),
    "sgd": lambda lr: keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
    "lion": lambda lr: keras.optimizers.Lion(learning_rate=lr),
}


@dataclass(frozen=True)
class TreatmentStep:
    """One concrete change of a treatment plan.

    Attributes:
        order: Position in the plan (1 = first).
        category: One of :data:`PRIORITY`'s keys.
        action: What to change, in words.
        reason: Why: the finding it answers, with the measured numbers.
        layers: The layers concerned (empty = the whole network).
        reference: The paper the remedy comes from.
        change: Machine-readable settings (e.g. ``{"activation": "relu"}``): keys of
            :data:`MODEL_KEYS` rebuild the model, keys of :data:`TRAINING_KEYS` change training;
            empty for a manual check (``data``).
        source: ``"recommendation"`` (from the report) or ``"follows from step N"`` (a change
            another step makes necessary, such as the initializer matched to a new activation).
    """

    order: int
    category: str
    action: str
    reason: str
    layers: tuple[str, ...] = ()
    reference: str = ""
    change: dict[str, Any] = field(default_factory=dict)
    source: str = "recommendation"

    def __str__(self) -> str:
        where = _layer_text(self.layers)
        return f"{self.order}. [{self.category}] {self.action}{where} — {self.reason}"


def _layer_text(layers: tuple[str, ...]) -> str:
    if not layers:
        return ""
    if len(layers) <= 3:
        return f" (layers {', '.join(layers)})"
    return f" (layers {layers[0]} ... {layers[-1]}, {len(layers)} in all)"


@dataclass(frozen=True)
class TreatmentPlan:
    """An ordered list of changes for one diagnosed network (the result of :func:`prescribe`).

    Attributes:
        status: The diagnosis treated (the report's status).
        score: The report's health score.
        findings: The report's findings, for reference.
        steps: The changes, in the order to apply them.
        report: The report the plan was made from (the "before" of :func:`treat`).
    """

    status: str
    score: float
    findings: tuple[str, ...]
    steps: tuple[TreatmentStep, ...]
    report: Any = field(default=None, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        """Whether nothing needs changing (a healthy network)."""
        return not self.steps

    @property
    def model_changes(self) -> dict[str, Any]:
        """The builder keyword arguments the plan changes (keys of :data:`MODEL_KEYS`)."""
        return {k: v for step in self.steps for k, v in step.change.items() if k in MODEL_KEYS}

    @property
    def training_changes(self) -> dict[str, Any]:
        """The training settings the plan changes (keys of :data:`TRAINING_KEYS`)."""
        return {k: v for step in self.steps for k, v in step.change.items()
                if k in TRAINING_KEYS}

    def apply_to(self, build_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """``build_kwargs`` with the plan's model changes applied on top.

        Args:
            build_kwargs: The keyword arguments the sick network was built with (e.g.
                ``{"depth": 50, "activation": "sigmoid"}``).

        Returns:
            A new dict for the builder.
        """
        return {**(build_kwargs or {}), **self.model_changes}

    def optimizer(self, learning_rate: float = DEFAULT_LEARNING_RATE) -> keras.optimizers.Optimizer:
        """The optimizer the plan prescribes, with its learning-rate change and clipping.

        Args:
            learning_rate: The learning rate before the plan's ``learning_rate_factor``. When
                the diagnosed model was compiled, the plan holds the concrete new rate
                (``learning_rate`` in :attr:`training_changes`), which takes precedence.

        Returns:
            A fresh optimizer (Adam unless the plan names another), wrapped in
            :class:`gradhealth.ClippingOptimizer` when the plan clips.
        """
        learning_rate = check_positive_float("learning_rate", learning_rate)
        t = self.training_changes
        lr = float(t["learning_rate"]) if "learning_rate" in t else (
            learning_rate * float(t.get("learning_rate_factor", 1.0)))
        name = str(t.get("optimizer", "adam")).lower()
        base = _OPTIMIZERS.get(name, _OPTIMIZERS["adam"])(lr)
        if "clipping" not in t:
            return base
        method = t["clipping"]
        limit = float(t.get("clip_value", 1.0))
        if method in ("norm", "global_norm"):
            return ClippingOptimizer(base, method=method, max_norm=limit)
        if method == "value":
            return ClippingOptimizer(base, method="value", clip_value=limit)
        return ClippingOptimizer(base, method=method)

    def to_frame(self) -> pd.DataFrame:
        """The plan as a table: ``order, category, action, layers, change, reason, reference,
        source``."""
        return pd.DataFrame([{
            "order": s.order, "category": s.category, "action": s.action,
            "layers": _layer_text(s.layers).strip(" ()") or "all",
            "change": ", ".join(f"{k}={v!r}" for k, v in s.change.items()) or "(manual check)",
            "reason": s.reason, "reference": s.reference, "source": s.source,
        } for s in self.steps], columns=["order", "category", "action", "layers", "change",
                                         "reason", "reference", "source"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of the plan."""
        return {"status": self.status, "score": self.score, "findings": list(self.findings),
                "steps": [{"order": s.order, "category": s.category, "action": s.action,
                           "reason": s.reason, "layers": list(s.layers),
                           "reference": s.reference, "change": dict(s.change),
                           "source": s.source} for s in self.steps]}

    def __str__(self) -> str:
        head = f"Treatment plan for a '{self.status}' network (health score {self.score:g}):"
        if self.empty:
            return head + "\n  no change needed: every layer's gradient is healthy."
        return "\n".join([head, *(f"  {s}" for s in self.steps)])

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{s.order}</td><td>{html.escape(s.category)}</td>"
            f"<td>{html.escape(s.action)}</td>"
            f"<td>{html.escape(_layer_text(s.layers).strip(' ()') or 'all')}</td>"
            f"<td>{html.escape(s.reason)}</td><td>{html.escape(s.reference)}</td></tr>"
            for s in self.steps)
        head = html.escape(f"Treatment plan for a '{self.status}' network "
                           f"(health score {self.score:g})")
        if self.empty:
            return f"<p><b>{head}</b>: no change needed.</p>"
        return (f"<p><b>{head}</b></p><table><tr><th>#</th><th>category</th><th>action</th>"
                f"<th>layers</th><th>why</th><th>reference</th></tr>{rows}</table>")


def _check_report(report: Any) -> None:
    missing = [a for a in ("status", "score", "findings", "recommendations", "context")
               if not hasattr(report, a)]
    if missing:
        raise TypeError(
            "Argument `report` must be a gradhealth.HealthReport (the result of "
            f"gradhealth.diagnosis); it lacks {missing}. Received: report={report!r:.80} "
            f"(of type {type(report).__name__})"
        )


def prescribe(report: Any, overrides: dict[str, Any] | None = None) -> TreatmentPlan:
    """An ordered treatment plan for a diagnosed network.

    Built from the report's own :attr:`~gradhealth.HealthReport.recommendations` (each tied
    to a finding and its measured numbers), so different diagnoses get different plans:

    1. Recommendations of the same category are merged into one step (their layers joined,
       the first recommendation's settings kept: the report lists the most severe problem's
       first).
    2. A change of activation that leaves the initializer unmatched adds the matched
       initializer (:func:`gradhealth.core.knowledge.matched_initializer`) as a step that "follows
       from" the activation step.
    3. A learning-rate factor is turned into the concrete new learning rate when the model was
       compiled (the report's context holds it).
    4. Steps are ordered by :data:`PRIORITY`: causes before symptoms.

    A healthy report gives an empty plan.

    Args:
        report: A :class:`~gradhealth.HealthReport` from :func:`gradhealth.diagnosis`.
        overrides: The practitioner's choices among equivalent remedies, applied to the steps
            the diagnosis calls for (never adding a step): e.g. ``{"normalization": "layer"}``
            when training is short, because batch normalization's moving statistics (momentum
            0.99, a time constant of about 100 steps) are not yet accurate at inference after
            a few epochs, while layer normalization computes the same thing in training and
            inference (Ba et al. 2016). Keys must be in :data:`MODEL_KEYS` or
            :data:`TRAINING_KEYS`.

    Returns:
        A :class:`TreatmentPlan`.

    Raises:
        TypeError: ``report`` is not a health report.
        ValueError: ``overrides`` has unknown keys.

    Example:
        >>> report = gradhealth.diagnosis(deep_mlp(50, activation="sigmoid",
        ...                                      kernel_initializer="glorot_uniform"), x, y, loss)
        >>> print(prescribe(report))
        Treatment plan for a 'vanishing' network (health score 16.1):
          1. [activation] Replace sigmoid with ReLU ...
          2. [initializer] Use He normal initialization ...

    References:
        Each step carries its own (Glorot, Bordes & Bengio 2011; He et al. 2015; Ioffe &
        Szegedy 2015; He et al. 2016; Kingma & Ba 2015; Pascanu et al. 2013; ...).
    """
    _check_report(report)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(MODEL_KEYS) - set(TRAINING_KEYS))
    if unknown:
        raise ValueError(
            f"Argument `overrides` has unknown keys {unknown}; valid keys are "
            f"{list(MODEL_KEYS) + list(TRAINING_KEYS)}. Received: overrides={overrides!r}"
        )
    merged: dict[str, dict[str, Any]] = {}
    for rec in report.recommendations:
        category = getattr(rec, "category", None)
        if category not in PRIORITY:
            continue
        params = dict(getattr(rec, "params", {}) or {})
        entry = merged.setdefault(category, {
            "action": rec.action, "reasons": [], "layers": [], "references": [],
            "change": params, "position": len(merged)})
        if rec.reason not in entry["reasons"]:
            entry["reasons"].append(rec.reason)
        for layer in rec.layers:
            if layer not in entry["layers"]:
                entry["layers"].append(layer)
        if rec.reference and rec.reference not in entry["references"]:
            entry["references"].append(rec.reference)
        for key, value in params.items():
            entry["change"].setdefault(key, value)

    for entry in merged.values():
        for key, value in overrides.items():
            if key in entry["change"] and entry["change"][key] != value:
                entry["action"] += f" (chosen: {key}={value!r} instead of {entry['change'][key]!r})"
                entry["change"][key] = value

    follow: dict[str, str] = {}
    new_act = merged.get("activation", {}).get("change", {}).get("activation")
    if new_act is not None:
        matched = matched_initializer(new_act)
        init = merged.get("initializer")
        if init is None:
            merged["initializer"] = {
                "action": f"Initialize the kernels with {matched} to match {new_act}",
                "reasons": [f"the variance of {matched} is derived for {new_act}-type "
                            "activations, so the new activation starts with unit gain per layer"],
                "layers": list(merged["activation"]["layers"]),
                "references": [INITIALIZER_SOURCES[matched]],
                "change": {"kernel_initializer": matched}, "position": len(merged)}
            follow["initializer"] = "activation"
        elif init["change"].get("kernel_initializer") != matched:
            init["change"]["kernel_initializer"] = matched
            init["reasons"].append(f"matched to the new activation {new_act}")
            follow["initializer"] = "activation"

    lr = report.context.get("learning_rate") if isinstance(report.context, dict) else None
    lr_entry = merged.get("learning_rate")
    if lr_entry is not None and isinstance(lr, (int, float)) and lr > 0:
        factor = float(lr_entry["change"].get("learning_rate_factor", 1.0))
        lr_entry["change"]["learning_rate"] = lr * factor
        lr_entry["action"] += f": {lr:.3g} -> {lr * factor:.3g}"

    ordered = sorted(merged.items(), key=lambda kv: (PRIORITY[kv[0]], kv[1]["position"]))
    order_of = {category: i + 1 for i, (category, _) in enumerate(ordered)}
    steps = tuple(
        TreatmentStep(
            order=order_of[category], category=category, action=entry["action"],
            reason="; ".join(entry["reasons"]), layers=tuple(entry["layers"]),
            reference="; ".join(entry["references"]), change=dict(entry["change"]),
            source=(f"follows from step {order_of[follow[category]]}" if category in follow
                    else "recommendation"))
        for category, entry in ordered)
    return TreatmentPlan(status=report.status, score=float(report.score),
                         findings=tuple(report.findings), steps=steps, report=report)
