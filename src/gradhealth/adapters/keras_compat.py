"""Every read of a private Keras attribute, in one place, each with a test that fails loudly.

Keras 3 keeps a few things gradhealth needs behind underscores. Each accessor below names the
attribute it reads, says why no public API serves, and falls back to a public (slower or less
complete) route when the attribute is missing. ``tests/test_keras_compat.py`` asserts that each
attribute still exists with the expected type on the installed Keras, so an upgrade that renames
one fails the test suite instead of silently taking the fallback.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["PRIVATE_ATTRIBUTES", "compiled_loss_object", "jax_train_state_value",
           "optimizer_distribution_strategy", "optimizer_own_variables", "walk_layers"]

PRIVATE_ATTRIBUTES: dict[str, str] = {
    "Layer._flatten_layers": "walk nested layers of custom layers (no public recursive walk)",
    "Optimizer._variables": "an optimizer wrapper's own variables, apart from the inner ones",
    "Model._jax_state": "JAX fit's running train state (variables are written back per epoch)",
    "Model._jax_state_synced": "whether that state was written back to the variables",
    "TFOptimizer._distribution_strategy": "the tf.distribute strategy an optimizer was created "
                                          "under, to create a wrapper's variables alike",
    "Model._compile_loss": "which compile() a traced checkup step was built for",
}
"""The private Keras attributes read here and why (checked by the tests)."""


def walk_layers(model: Any) -> list[Any]:
    """Every layer inside ``model``, depth first, nested models and custom layers included.

    ``model.layers`` lists only a model's direct layers, and a custom layer (e.g. a transformer
    block that creates ``LayerNormalization`` in ``__init__``) exposes none publicly. Keras'
    tracker records them; ``Layer._flatten_layers(include_self=False, recursive=True)`` walks
    them. Without it, the public ``layers`` attribute is walked recursively.

    Args:
        model: A Keras model or layer.

    Returns:
        The layers in creation order, each once, ``model`` itself excluded.
    """
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        return list(flatten(include_self=False, recursive=True))
    found: list[Any] = []
    for layer in getattr(model, "layers", None) or []:
        found.append(layer)
        found.extend(walk_layers(layer))
    return found


def optimizer_own_variables(optimizer: keras.optimizers.Optimizer) -> list[Any]:
    """The variables an optimizer created itself (``Optimizer._variables``).

    A wrapper optimizer (like Keras' ``LossScaleOptimizer``) reports its own variables followed
    by its inner optimizer's from ``variables``; only the private list holds its own alone.
    """
    return optimizer._variables


def optimizer_distribution_strategy(optimizer: keras.optimizers.Optimizer) -> Any | None:
    """The ``tf.distribute`` strategy ``optimizer`` was created under, or None.

    Keras' TensorFlow optimizer records ``tf.distribute.get_strategy()`` at construction
    (``TFOptimizer._distribution_strategy``) and creates its slot variables under it. A wrapper
    created outside ``strategy.scope()`` (the monitor installs its wrapper inside ``fit``) must
    create its own variables under the same strategy, so that each replica keeps its own copy
    rather than every replica writing one shared variable. No public attribute names it; None
    on the other backends (and if Keras drops the attribute).
    """
    return getattr(optimizer, "_distribution_strategy", None)


def jax_train_state_value(model: Any, optimizer: Any, variable: Any) -> np.ndarray | None:
    """The current value of one of ``optimizer``'s variables inside JAX ``fit``, or None.

    On JAX, ``fit`` carries every variable in ``model._jax_state`` and writes it back to the
    Keras variables only at the end of an epoch (``_jax_state_synced`` is False in between),
    so reading ``variable.value`` mid-epoch gives a stale value. This reads the running state;
    None means "read the variable itself" (not JAX, not inside fit, or Keras changed).
    """
    if keras.backend.backend() != "jax" or model is None or optimizer is None:
        return None
    state = getattr(model, "_jax_state", None)
    if not state or not state.get("optimizer_variables") or getattr(
            model, "_jax_state_synced", True):
        return None
    for i, v in enumerate(optimizer.variables):
        if v is variable:
            return np.asarray(state["optimizer_variables"][i])
    return None


def compiled_loss_object(model: Any) -> Any:
    """The object ``compile()`` built for the model's loss (``Model._compile_loss``), or None.

    A traced checkup step calls ``model.compute_loss``; after a new ``compile()`` (other losses
    or ``loss_weights``) it must be traced again. ``compile`` replaces ``_compile_loss`` each
    time and keeps no public handle on it; without it, ``model.loss`` (the argument given to
    ``compile``, which misses a change of ``loss_weights``) is used.
    """
    if hasattr(model, "_compile_loss"):
        return model._compile_loss
    return getattr(model, "loss", None)
