"""Apply a treatment plan: rebuild, retrain and re-examine the network (:func:`treat`).

The plan itself comes from :func:`gradhealth.prescribe`; this module carries it out
and verifies it with a second checkup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.training import build_metrics, build_optimizer
from gradhealth._internal.validation import (
    check_batch_pair,
    check_positive_int,
)
from gradhealth.diagnosis import checkup
from gradhealth.report.treatment_plots import plot_before_after
from gradhealth.treatment.plan import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE, TreatmentPlan

__all__ = ["TreatmentResult", "treat"]


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
    build_optimizer(model)
    build_metrics(model, xa[:1], ya[:1])
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
