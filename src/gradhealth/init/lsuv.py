"""LSUV: layer-sequential unit-variance initialization for any Keras 3 model, every backend.

References:
    Mishkin & Matas (2016), "All you need is a good init", ICLR (arXiv:1511.06422, 2015).
    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in
    deep linear neural networks" (the orthogonal start).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.validation import as_batch_array, check_positive_float, check_positive_int

__all__ = ["LSUV_LAYER_TYPES", "LSUV_MIN_BATCH", "lsuv_init"]


# --------------------------------------------------------------------------------------------
# LSUV
# --------------------------------------------------------------------------------------------

#: Layer types LSUV calibrates without being told: their output is ``kernel * input (+ bias)``,
#: so scaling the kernel scales the output's deviation from the bias exactly.
LSUV_LAYER_TYPES: tuple[type, ...] = (
    keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
)
#: Fewest examples in the LSUV batch. A variance needs two samples; Mishkin & Matas use a full
#: mini-batch, and with fewer than 16 examples the variance of one layer's output moves by more
#: than 10% (the default ``tol``) from batch to batch for a 64-unit layer, so calibration would
#: chase noise.
LSUV_MIN_BATCH: int = 16


def _walk(layer: Any) -> list[Any]:
    found = []
    for sub in getattr(layer, "layers", None) or []:
        found.append(sub)
        found.extend(_walk(sub))
    return found


class _CallSpy:
    """Record the inputs of the first call of some layers during one forward pass.

    Keras 3 has no forward hooks; the spy sets an *instance* attribute ``call`` on each watched
    layer (which ``Layer.__call__`` reads through ``self.call``) and removes it on exit, so the
    layer class is never modified and the layer is left exactly as it was.
    """

    def __init__(self, layers: Sequence[Any]):
        self.layers = list(layers)
        self.order: list[Any] = []
        self.inputs: dict[int, tuple[tuple, dict]] = {}
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _CallSpy:
        for layer in self.layers:
            original = layer.call
            self._saved[id(layer)] = layer.__dict__.get("call")

            def spy(*args, _layer=layer, _original=original, **kwargs):
                if id(_layer) not in self.inputs:
                    self.inputs[id(_layer)] = (args, kwargs)
                    self.order.append(_layer)
                return _original(*args, **kwargs)

            object.__setattr__(layer, "call", spy)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            saved = self._saved.get(id(layer))
            if saved is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", saved)


def _output_variance(layer: Any, args: tuple, kwargs: dict, pre_activation: bool) -> float:
    """Variance of all entries of the layer's output, before its own activation if asked."""
    swap = pre_activation and getattr(layer, "activation", None) is not None
    saved = layer.activation if swap else None
    if swap:
        layer.activation = keras.activations.linear
    try:
        out = layer(*args, **kwargs)
    finally:
        if swap:
            layer.activation = saved
    out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
    return float(np.var(out))


def lsuv_init(model: keras.Model, x: Any, target_var: float = 1.0, tol: float = 0.1,
              max_iter: int = 10, orthogonal: bool = True, layers: Sequence[Any] | None = None,
              pre_activation: bool = True, seed: int | None = 0, verbose: bool = False
              ) -> pd.DataFrame:
    """Layer-sequential unit-variance initialization (LSUV) of a Keras model, in place.

    1. Pre-initialize every calibrated kernel with an orthonormal matrix (``orthogonal=True``).
    2. From the input to the output, for each calibrated layer: run the model on ``x``, measure
       the variance of the layer's output on the batch, and divide the kernel by
       ``sqrt(variance / target_var)``; repeat until ``|variance - target_var| < tol`` or
       ``max_iter`` measurements. Earlier layers are final when a layer is calibrated, so each
       layer sees the input it will see after LSUV.

    Calibrated by default: ``Dense``, ``Conv1D``, ``Conv2D``, ``Conv3D`` anywhere in the model
    (nested models included). ``layers=`` adds layers of other types (objects or names) that
    have a ``kernel``. Works for Sequential, functional and subclassed models on every backend.
    With ``pre_activation=True`` (default) the variance is that of ``kernel * input + bias``
    before the layer's own activation: Mishkin & Matas' layers are followed by separate ReLU
    layers, and a bounded activation (tanh) could never reach a variance of 1 after squashing.

    Args:
        model: A ``keras.Model`` (built, or buildable by calling it on ``x``).
        x: A batch of inputs (at least :data:`LSUV_MIN_BATCH` examples, finite).
        target_var: Target output variance (> 0); 1.0 in the paper.
        tol: Tolerance on the variance (> 0); 0.1 in the paper.
        max_iter: Maximum measurements per layer (>= 1); 10 in the paper.
        orthogonal: Pre-initialize kernels with ``keras.initializers.Orthogonal``.
        layers: Extra layers (objects or names) to calibrate.
        pre_activation: Measure before the layer's built-in activation (True) or after it.
        seed: Seed of the orthogonal pre-initialization (layer ``i`` uses ``seed + i``).
        verbose: Print one line per layer.

    Returns:
        The calibration history: DataFrame with columns ``layer, iteration, variance, scale,
        converged`` (one row per measurement; ``scale`` is the factor then applied to the
        kernel, 1.0 once converged). ``history.attrs["skipped"]`` maps each layer with weights
        that was *not* calibrated to the reason, and ``history.attrs["not_converged"]`` lists
        calibrated layers that reached ``max_iter`` outside ``tol``. Both also raise a
        ``UserWarning`` when non-empty.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``; ``x`` is not numeric.
        ValueError: Bad ``target_var``/``tol``/``max_iter``; ``x`` non-finite or smaller than
            :data:`LSUV_MIN_BATCH`; no supported layer in the model; a layer in ``layers`` is
            not in the model or has no kernel.

    Example:
        >>> history = lsuv_init(model, x_train[:256])
        >>> history.groupby("layer")["variance"].last()   # all within 1.0 +- 0.1

    References:
        Mishkin & Matas (2016), "All you need is a good init", ICLR (arXiv:1511.06422).
        Saxe, McClelland & Ganguli (2014) (orthonormal pre-initialization).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    target_var = check_positive_float("target_var", target_var)
    tol = check_positive_float("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    xa = as_batch_array("x", x)
    if xa.shape[0] < LSUV_MIN_BATCH:
        raise ValueError(
            f"Argument `x` has {xa.shape[0]} example(s), too few to estimate a layer's output "
            f"variance: LSUV needs at least {LSUV_MIN_BATCH} (a mini-batch). "
            f"Received: x.shape={xa.shape}"
        )
    if not model.built:
        model(xa[:1])
    all_layers = _walk(model)
    extra = _resolve_extra_layers(all_layers, layers, model)
    candidates = [lay for lay in all_layers
                  if isinstance(lay, LSUV_LAYER_TYPES) or any(lay is e for e in extra)]
    candidates = list({id(lay): lay for lay in candidates}.values())
    skipped: dict[str, str] = {}
    for lay in all_layers:
        if any(lay is c for c in candidates) or not lay.weights:
            continue
        if getattr(lay, "layers", None):
            continue  # a nested model or block: its own layers are examined one by one
        skipped[lay.name] = (
            f"{type(lay).__name__} is not a supported type "
            f"({', '.join(t.__name__ for t in LSUV_LAYER_TYPES)}); pass it in `layers=` if "
            "scaling its `kernel` scales its output"
        )
    if not candidates:
        raise ValueError(
            "lsuv_init found no layer to calibrate: it calibrates "
            f"{[t.__name__ for t in LSUV_LAYER_TYPES]} and the layers named in `layers=`. "
            f"Received: model={model.name!r} with layers "
            f"{[f'{lay.name} ({type(lay).__name__})' for lay in all_layers]}"
        )

    # Execution order (a subclassed model's attribute order need not be its call order).
    with _CallSpy(candidates) as spy:
        model(xa, training=False)
    for lay in candidates:
        if id(lay) not in spy.inputs:
            skipped[lay.name] = "not reached by the forward pass on `x`"
    ordered = list(spy.order)

    if orthogonal:
        for i, lay in enumerate(ordered):
            shape = tuple(lay.kernel.shape)
            init = keras.initializers.Orthogonal(seed=None if seed is None else seed + i)
            lay.kernel.assign(init(shape, dtype=lay.kernel.dtype))

    rows: list[dict[str, Any]] = []
    not_converged: list[str] = []
    for lay in ordered:
        with _CallSpy([lay]) as spy:
            model(xa, training=False)
        args, kwargs = spy.inputs[id(lay)]
        converged = False
        for iteration in range(max_iter):
            var = _output_variance(lay, args, kwargs, pre_activation)
            if not math.isfinite(var):
                raise ValueError(
                    f"The output of layer {lay.name!r} has a non-finite variance on `x` "
                    f"(variance={var}); LSUV cannot calibrate it. Check the data and the "
                    "layers before it."
                )
            converged = abs(var - target_var) < tol
            if var == 0.0:
                skipped[lay.name] = "its output is constant on `x` (variance 0): nothing to scale"
                rows.append({"layer": lay.name, "iteration": iteration, "variance": var,
                             "scale": 1.0, "converged": False})
                break
            scale = 1.0 if converged else math.sqrt(target_var / var)
            rows.append({"layer": lay.name, "iteration": iteration, "variance": var,
                         "scale": scale, "converged": converged})
            if converged:
                break
            lay.kernel.assign(keras.ops.cast(lay.kernel.value * scale, lay.kernel.dtype))
        if not converged and lay.name not in skipped:
            not_converged.append(lay.name)
        if verbose:
            last = rows[-1]
            print(f"lsuv_init: {lay.name}: variance {last['variance']:.4f} after "
                  f"{last['iteration'] + 1} measurement(s)"
                  f"{'' if last['converged'] else ' (not within tol)'}")

    history = pd.DataFrame(rows, columns=["layer", "iteration", "variance", "scale", "converged"])
    history.attrs["skipped"] = dict(skipped)
    history.attrs["not_converged"] = list(not_converged)
    history.attrs["target_var"] = target_var
    history.attrs["tol"] = tol
    if skipped:
        warnings.warn(
            "lsuv_init skipped these layers: "
            + "; ".join(f"{name}: {why}" for name, why in skipped.items()),
            UserWarning, stacklevel=2,
        )
    if not_converged:
        warnings.warn(
            f"lsuv_init: layers {not_converged} did not reach variance {target_var} +- {tol} in "
            f"{max_iter} iterations (a large bias or a saturating activation can prevent it).",
            UserWarning, stacklevel=2,
        )
    return history


def _resolve_extra_layers(all_layers: list[Any], layers: Sequence[Any] | None,
                          model: keras.Model) -> list[Any]:
    if layers is None:
        return []
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    by_name = {lay.name: lay for lay in all_layers}
    found = []
    for item in layers:
        lay = by_name.get(item) if isinstance(item, str) else item
        if lay is None or not any(lay is c for c in all_layers):
            raise ValueError(
                f"Argument `layers` names a layer that is not in model {model.name!r}: {item!r}. "
                f"The model's layers are {sorted(by_name)}. Received: layers={layers!r}"
            )
        kernel = getattr(lay, "kernel", None)
        if kernel is None or len(getattr(kernel, "shape", ())) < 2:
            raise ValueError(
                f"Argument `layers` includes {lay.name!r} ({type(lay).__name__}), which has no "
                "2-D or larger `kernel` to scale. Received: layers="
                f"{[getattr(v, 'name', v) for v in layers]!r}"
            )
        found.append(lay)
    return found
