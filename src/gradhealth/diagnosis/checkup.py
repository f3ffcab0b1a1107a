"""The gradient checkup: one batch's per-layer gradients, statistics and a diagnosis.

Example:
    >>> import gradhealth as gh
    >>> model = gh.models.demo_network("sigmoid")
    >>> x, y = gh.data.digits_batch(128)
    >>> report = gh.checkup(model, x, y, loss="sparse_categorical_crossentropy")
    >>> report.status
    'vanishing'
"""

from __future__ import annotations

from typing import Any

import keras

from gradhealth.core.thresholds import Thresholds
from gradhealth.diagnosis.context import NORMALIZATION_LAYERS, RESIDUAL_LAYERS, model_context
from gradhealth.diagnosis.gradients import measure_gradients, prepare_batch, resolve_loss
from gradhealth.diagnosis.report import HealthReport, diagnose

__all__ = ["NORMALIZATION_LAYERS", "RESIDUAL_LAYERS", "checkup", "model_context"]


def checkup(model: keras.Model, x: Any, y: Any = None, loss: Any = None,
            thresholds: Thresholds | dict | None = None,
            sample_weight: Any = None) -> HealthReport:
    """Examine a model's gradients on one batch and diagnose their health.

    One forward and backward pass (``training=True``, model state left unchanged), per-variable
    statistics reduced on the device with max-abs scaling (no underflow), then a model-aware diagnosis (:mod:`gradhealth.diagnosis.context`):
    each layer is read according to its role (kernels along depth in blocks, kernels followed
    by normalization by ``||g||/||W||``, attention query/key and normalization scales not as
    depth evidence, embeddings on the rows the batch touched) and classified ``healthy``,
    ``vanishing``, ``exploding``, ``dead`` or ``nonfinite`` by the documented
    :class:`~gradhealth.Thresholds`, scored 0-100 (gradient health, not accuracy), and
    explained with findings and recommendations that fit the model. Only a model with a
    recurrent layer pays for one extra backward pass: the gradient reaching each timestep.

    Args:
        model: A built ``keras.Model`` with trainable weights (any backend).
        x: One input batch (array-like, first axis = examples).
        y: The targets for ``x``.
        loss: Keras loss name or object; defaults to the model's compiled loss.
        thresholds: A :class:`Thresholds`, a dict of overrides, or None for the defaults.
        sample_weight: Per-example weights, as in ``fit``. ``x``, ``y`` and ``loss`` take
            every form ``fit`` does (see :func:`gradhealth.layer_gradients`): a dataset or
            generator as ``x`` gives one batch.

    Returns:
        A :class:`HealthReport`.

    Raises:
        ValueError: Unbuilt model, no trainable weights, empty/non-finite batch, mismatched
            batch sizes, unknown or missing loss, invalid thresholds.
        TypeError: Wrong argument types (not a model, non-numeric data).

    Example:
        >>> report = checkup(model, x, y, loss="sparse_categorical_crossentropy")
        >>> report.status, report.score
        ('vanishing', 21.3)
        >>> print(report.findings[0])

    References:
        Hochreiter 1991; Bengio, Simard & Frasconi 1994 (vanishing gradients, through time);
        van Laarhoven 2017 (scale-invariant kernels); Xiong et al. 2020 (attention at init);
        Glorot & Bengio 2010 (initialization and saturation); Pascanu, Mikolov & Bengio 2013
        (exploding gradients).
    """
    t = Thresholds.coerce(thresholds)
    # One batch in NumPy form first: a generator or dataset must be read once, and the context's
    # probes (embedding rows, gradient through time) look at the same batch.
    xa, ya, wa = prepare_batch(model, x, y, sample_weight)
    value, stats, variables = measure_gradients(model, xa, ya, loss, wa, checked=True)
    layer_names = list(dict.fromkeys(stats["layer"]))
    context = model_context(model, layer_names, x=xa, y=ya, loss_fn=resolve_loss(model, loss),
                            variables=variables)
    return diagnose(stats, t, context, loss=value)
