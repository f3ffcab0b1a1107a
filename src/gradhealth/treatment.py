"""From diagnosis to treatment: an ordered plan of concrete changes, applied and verified.

The medical analogy of the course, made executable::

    report = gradhealth.checkup(model, x, y, loss=loss)        # examine and diagnose
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
import numpy as np
import pandas as pd

from gradhealth._validation import check_batch_pair, check_positive_float, check_positive_int
from gradhealth.robust import matched_initializer

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
"""Training epochs of :func:`treat`: on the 1347 sklearn-digits training examples a healthy
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
            :class:`gradhealth.clipping.ClippingOptimizer` when the plan clips.
        """
        learning_rate = check_positive_float("learning_rate", learning_rate)
        t = self.training_changes
        lr = float(t["learning_rate"]) if "learning_rate" in t else (
            learning_rate * float(t.get("learning_rate_factor", 1.0)))
        name = str(t.get("optimizer", "adam")).lower()
        base = _OPTIMIZERS.get(name, _OPTIMIZERS["adam"])(lr)
        if "clipping" not in t:
            return base
        from gradhealth.clipping import ClippingOptimizer

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
            f"gradhealth.checkup); it lacks {missing}. Received: report={report!r:.80} "
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
       initializer (:func:`gradhealth.robust.matched_initializer`) as a step that "follows
       from" the activation step.
    3. A learning-rate factor is turned into the concrete new learning rate when the model was
       compiled (the report's context holds it).
    4. Steps are ordered by :data:`PRIORITY`: causes before symptoms.

    A healthy report gives an empty plan.

    Args:
        report: A :class:`~gradhealth.HealthReport` from :func:`gradhealth.checkup`.
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
        >>> report = gradhealth.checkup(deep_mlp(50, activation="sigmoid",
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
                "references": ["He et al. 2015, Delving Deep into Rectifiers"
                               if matched == "he_normal" else
                               "LeCun et al. 1998, Efficient BackProp"],
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


@dataclass
class TreatmentResult:
    """The outcome of :func:`treat`.

    Attributes:
        plan: The plan applied.
        model: The treated, trained model.
        build_kwargs: The keyword arguments the treated model was built with.
        before: The report the plan was made from (None if the plan carries none).
        initial: Checkup of the treated network before training.
        after: Checkup of the treated network after training.
        history: ``model.fit``'s history dict.
        accuracy: Accuracy on the test data (training data when no test data was given).
    """

    plan: TreatmentPlan
    model: keras.Model
    build_kwargs: dict[str, Any]
    before: Any
    initial: Any
    after: Any
    history: dict[str, list[float]]
    accuracy: float

    @property
    def healthy(self) -> bool:
        """Whether the treated network's checkup after training is healthy."""
        return bool(self.after.healthy)

    def summary(self) -> pd.DataFrame:
        """Before/after side by side: status, score, gradient-norm range and spread."""
        def row(label: str, report: Any) -> dict[str, Any]:
            used = report.layers[report.layers["status"] != "unused"]
            norms = used["grad_norm"].to_numpy(dtype=np.float64)
            norms = norms[np.isfinite(norms) & (norms > 0)]
            return {"network": label, "status": report.status, "score": report.score,
                    "layers": len(used),
                    "min_grad_norm": float(norms.min()) if norms.size else float("nan"),
                    "max_grad_norm": float(norms.max()) if norms.size else float("nan"),
                    "spread": float(norms.max() / norms.min()) if norms.size else float("nan")}

        rows = []
        if self.before is not None:
            rows.append(row("before (diagnosed)", self.before))
        rows.append(row("treated, untrained", self.initial))
        rows.append(row("treated, trained", self.after))
        return pd.DataFrame(rows)

    def plot(self) -> Any:
        """Gradient flow before and after, side by side
        (:func:`gradhealth.report.treatment_plots.plot_before_after`)."""
        from gradhealth.report.treatment_plots import plot_before_after

        return plot_before_after(self)


def treat(
    model_builder: Callable[..., keras.Model],
    plan: TreatmentPlan,
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    build_kwargs: dict[str, Any] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 64,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    loss: Any = None,
    probe_size: int = 128,
    seed: int = 0,
    compile_kwargs: dict[str, Any] | None = None,
) -> TreatmentResult:
    """Apply a plan: rebuild, retrain, and re-run the checkup to verify it worked.

    Args:
        model_builder: Callable returning a built model from keyword arguments such as
            ``gradhealth.models.deep_mlp`` (or ``robust_mlp``): the plan's
            :attr:`~TreatmentPlan.model_changes` are passed on top of ``build_kwargs``.
        plan: The plan from :func:`prescribe`.
        x: Training inputs.
        y: Training labels (integer classes for the default loss).
        x_test: Test inputs for the final accuracy (default: the training data).
        y_test: Test labels.
        build_kwargs: How the sick network was built, without the plan (e.g.
            ``{"depth": 50, "activation": "sigmoid", "kernel_initializer": "glorot_uniform"}``).
        epochs: Training epochs (:data:`DEFAULT_EPOCHS`).
        batch_size: Mini-batch size.
        learning_rate: Learning rate before the plan's ``learning_rate_factor``.
        loss: Loss; default ``SparseCategoricalCrossentropy(from_logits=True)`` for the logit
            outputs of the gradhealth builders.
        probe_size: Examples of ``x`` used by the checkups (the first ``probe_size``).
        seed: Seed for ``keras.utils.set_random_seed`` before building and training.
        compile_kwargs: Extra ``model.compile`` arguments (e.g. ``{"jit_compile": False}``).

    Returns:
        A :class:`TreatmentResult` with the before, treated-untrained and treated-trained
        checkups, the history and the accuracy.

    Raises:
        TypeError: ``plan`` is not a :class:`TreatmentPlan`, ``model_builder`` is not callable
            or does not return a Keras model.
        ValueError: Bad sizes or data; the builder rejects the plan's keyword arguments.

    Example:
        >>> result = treat(deep_mlp, plan, x_tr, y_tr, x_te, y_te,
        ...                build_kwargs={"depth": 50, "activation": "sigmoid"})
        >>> result.after.status, round(result.accuracy, 2)
        ('healthy', 0.9)
    """
    from gradhealth.checkup import checkup

    if not isinstance(plan, TreatmentPlan):
        raise TypeError(
            "Argument `plan` must be a TreatmentPlan from gradhealth.prescribe(report). "
            f"Received: plan={plan!r:.80} (of type {type(plan).__name__})"
        )
    if not callable(model_builder):
        raise TypeError(
            "Argument `model_builder` must be callable (e.g. gradhealth.models.deep_mlp). "
            f"Received: model_builder={model_builder!r}"
        )
    xa, ya = check_batch_pair(x, y)
    if (x_test is None) != (y_test is None):
        raise ValueError(
            "Arguments `x_test` and `y_test` must be given together. Received: "
            f"x_test={'None' if x_test is None else 'an array'}, "
            f"y_test={'None' if y_test is None else 'an array'}"
        )
    xt, yt = check_batch_pair(x_test, y_test) if x_test is not None else (xa, ya)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    probe_size = check_positive_int("probe_size", probe_size)
    if compile_kwargs is not None and not isinstance(compile_kwargs, dict):
        raise TypeError(f"Argument `compile_kwargs` must be a dict or None. "
                        f"Received: compile_kwargs={compile_kwargs!r}")
    loss_fn = loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)

    kwargs = plan.apply_to(build_kwargs)
    keras.utils.set_random_seed(seed)
    try:
        model = model_builder(**kwargs)
    except TypeError as e:
        raise ValueError(
            f"The builder does not accept the plan's keyword arguments ({e}). Pass a builder "
            "with deep_mlp-style arguments (activation, kernel_initializer, normalization, "
            f"residual). Received: build_kwargs={kwargs!r}"
        ) from e
    if not isinstance(model, keras.Model):
        raise TypeError(f"Argument `model_builder` must return a keras.Model. "
                        f"Received: a {type(model).__name__}")
    px, py = xa[:probe_size], ya[:probe_size]
    initial = checkup(model, px, py, loss=loss_fn)
    model.compile(optimizer=plan.optimizer(learning_rate), loss=loss_fn, metrics=["accuracy"],
                  **(compile_kwargs or {}))
    history = model.fit(xa, ya, epochs=epochs, batch_size=batch_size, verbose=0)
    after = checkup(model, px, py, loss=loss_fn)
    # One eager forward pass: ``predict`` would trace (and on JAX compile) one more function.
    pred = keras.ops.convert_to_numpy(model(xt, training=False))
    accuracy = float(np.mean(np.argmax(pred, axis=-1) == np.asarray(yt).reshape(-1)))
    return TreatmentResult(plan=plan, model=model, build_kwargs=kwargs, before=plan.report,
                           initial=initial, after=after,
                           history={k: [float(v) for v in vals]
                                    for k, vals in history.history.items()},
                           accuracy=accuracy)
