"""torch adapter: ``torch.autograd.grad`` over the Keras variables' parameters, eagerly.

Keras' torch backend runs eagerly; ``torch.compile`` costs tens of seconds per graph on CPU,
more than a checkup, so the step is plain autograd. Statistics are still reduced on the
device: only the ``(n_variables, k)`` matrix is copied to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import torch

from gradhealth.adapters._state import preserved, state_variables

__all__ = ["USER_ERRORS", "build_step", "run"]

# Errors that mean the data or loss do not fit the model (reported as ValueError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, IndexError,
                                                RuntimeError)


def _to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def build_step(model: keras.Model, objective: Any, reduce: Callable | None,
               accepts_training: bool) -> Callable:
    """The probe step of ``model`` (see :func:`gradhealth.adapters.probe`)."""

    def to_tensors(batch: Any) -> Any:
        return None if batch is None else keras.tree.map_structure(
            keras.ops.convert_to_tensor, batch)

    # The step is rebuilt when the model's variables change (gradhealth.adapters.probe keys it
    # on them), so they are read once here rather than by walking the layers at every call.
    trainable = list(model.trainable_variables)
    state = state_variables(model, include_metrics=True)

    def wrapper(x, y, sample_weight, scale):
        s = float(scale)
        params = [v.value for v in trainable]
        with preserved(state), torch.enable_grad():
            xt, yt, wt = to_tensors(x), to_tensors(y), to_tensors(sample_weight)
            y_pred = model(xt, training=True) if accepts_training else model(xt)
            loss = objective.fn(model, xt, yt, y_pred, wt).to(torch.float32)
            raw = torch.autograd.grad(loss if s == 1.0 else loss * s, params,
                                      allow_unused=True)
        with torch.no_grad():
            grads = [torch.zeros_like(p, dtype=torch.float32) if g is None
                     else g.to(torch.float32) if s == 1.0 else g.to(torch.float32) / s
                     for g, p in zip(raw, params, strict=True)]
            weights = [p.detach() for p in params]
            if reduce is not None:
                payload = _to_numpy(reduce(grads, weights))
            else:
                payload = ([_to_numpy(g) for g in grads], [_to_numpy(w) for w in weights])
        return float(loss.detach().cpu()), payload, [g is not None for g in raw]

    wrapper.traces = 1  # built once per model and loss; nothing is traced
    return wrapper


def run(model: keras.Model, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` (torch needs no special context)."""
    return fn()
