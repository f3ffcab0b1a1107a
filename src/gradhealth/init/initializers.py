"""Weight initializers: expected vs measured variance, variance propagation, and LSUV.

The initializers themselves are Keras' own (``keras.initializers``); this module adds the
analysis the course needs:

- :func:`weight_variance_table`: the variance formula of each initializer
  (:mod:`gradhealth.core.variance`) next to the variance of a kernel it actually draws.
- :func:`variance_propagation`: forward activation variance and backward gradient variance,
  layer by layer, of a deep MLP for one initializer x activation pair, measured in one compiled
  forward/backward pass and compared with the mean-field prediction.
- :func:`lsuv_init`: layer-sequential unit-variance initialization (Mishkin & Matas 2015) for
  any Keras 3 model on any backend.

References:
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp".
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks".
    He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers".
    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in
    deep linear neural networks".
    Mishkin & Matas (2016), "All you need is a good init", ICLR (arXiv:1511.06422, 2015).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth.core import variance as core_variance
from gradhealth.init.activations import properties, resolve_name

__all__ = ["PAIRINGS", "ActivationVarianceScaling", "available_initializers", "get_initializer",
           "resolve_initializer_name", "sample_weights", "weight_variance_table"]

_KERAS_CLASSES: dict[str, str] = {
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform",
    "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform",
    "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal",
    "random_normal": "RandomNormal",
    "random_uniform": "RandomUniform",
}
#: Initializers analysed by the course, with the activation family each was derived for.
PAIRINGS: dict[str, str] = {
    "glorot_uniform": "tanh, sigmoid, softmax/linear outputs (Glorot & Bengio 2010)",
    "glorot_normal": "tanh, sigmoid (Glorot & Bengio 2010)",
    "he_uniform": "ReLU family: relu, leaky_relu, elu, gelu, silu, mish (He et al. 2015)",
    "he_normal": "ReLU family: relu, leaky_relu, elu, gelu, silu, mish (He et al. 2015)",
    "lecun_uniform": "selu; linear layers (LeCun et al. 1998)",
    "lecun_normal": "selu: self-normalizing networks (Klambauer et al. 2017)",
    "orthogonal": "very deep linear/tanh nets, RNNs; the LSUV starting point (Saxe et al. 2014)",
    "random_normal": "nothing in particular: a fixed stddev ignores the layer's fan-in",
    "random_uniform": "nothing in particular: a fixed range ignores the layer's fan-in",
}


def available_initializers() -> list[str]:
    """Names of the initializers this module analyses (Keras' snake-case names)."""
    return list(_KERAS_CLASSES)


def resolve_initializer_name(name: Any, argument: str = "initializer") -> str:
    """Canonical name of an initializer, or a ``ValueError`` listing the valid ones."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _KERAS_CLASSES:
        raise ValueError(
            f"Unknown initializer {name!r}. Valid names are {available_initializers()}. "
            f"Received: {argument}={name!r}"
        )
    return key


def get_initializer(name: str, seed: int | None = None, **params: Any
                    ) -> keras.initializers.Initializer:
    """A seeded Keras initializer by name.

    Args:
        name: One of :func:`available_initializers`.
        seed: Seed for the draw; the same seed gives the same weights on every backend run.
        **params: Extra constructor arguments (``stddev`` for ``random_normal``, ``gain`` for
            ``orthogonal``...).

    Returns:
        A ``keras.initializers.Initializer``.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
    """
    cls = getattr(keras.initializers, _KERAS_CLASSES[resolve_initializer_name(name)])
    return cls(seed=seed, **params)


def sample_weights(name: str, shape: Sequence[int] = (256, 256), seed: int = 0,
                   **params: Any) -> np.ndarray:
    """One kernel drawn by a Keras initializer, as a float64 NumPy array (for plots/tests)."""
    init = get_initializer(name, seed=seed, **params)
    return np.asarray(keras.ops.convert_to_numpy(init(tuple(shape), dtype="float32")),
                      dtype=np.float64)


def weight_variance_table(initializers: Sequence[str] | None = None,
                          shapes: Sequence[Sequence[int]] = ((256, 256), (784, 128),
                                                             (3, 3, 64, 128)),
                          seed: int = 0) -> pd.DataFrame:
    """Expected (formula) vs. measured variance of kernels drawn by each initializer.

    Args:
        initializers: Names (default: all of :func:`available_initializers`).
        shapes: Kernel shapes to draw (Keras layout).
        seed: Draw seed.

    Returns:
        DataFrame with columns ``initializer, shape, fan_in, fan_out, expected_variance,
        measured_variance, ratio`` (measured / expected), one row per initializer x shape.

    Raises:
        ValueError: Unknown initializer name.
    """
    names = [resolve_initializer_name(n) for n in (initializers or available_initializers())]
    rows = []
    for name in names:
        for shape in shapes:
            w = sample_weights(name, shape, seed)
            fan_in, fan_out = core_variance.compute_fans(shape)
            expected = core_variance.expected_weight_variance(name, shape)
            # Mean square, not variance about the sample mean: the formulas are for E[w^2] of
            # zero-mean draws, and the sample mean of an orthogonal matrix is not exactly zero.
            measured = float(np.mean(w**2))
            rows.append({"initializer": name, "shape": tuple(shape), "fan_in": fan_in,
                         "fan_out": fan_out, "expected_variance": expected,
                         "measured_variance": measured, "ratio": measured / expected})
    return pd.DataFrame(rows)


@keras.saving.register_keras_serializable(package="gradhealth")
class ActivationVarianceScaling(keras.initializers.VarianceScaling):
    """Variance scaling with the gain measured from the activation: ``Var(W) = 1 / (n_in E[f(z)^2])``.

    He et al. (2015) derive ``Var(W) = 2 / n_in`` for ReLU because ``E[relu(z)^2] = Var(z) / 2``
    for a zero-mean Gaussian ``z``. The same argument for any activation ``f`` keeps the
    pre-activation variance at 1 layer after layer when ``Var(W) = 1 / (n_in E[f(z)^2])`` with
    ``z ~ N(0, 1)`` (the mean-field fixed point q* = 1; Poole et al. 2016). The second moment is
    the catalog's measured ``second_moment``: the scale is 2.0 for ReLU (He), 1.0 for SELU
    (LeCun, Klambauer et al. 2017) and 2.54 for tanh (close to the 5/3 gain squared, 2.78, that
    PyTorch recommends).

    Args:
        activation: A :mod:`gradhealth.init.activations` catalog name.
        distribution: ``"truncated_normal"``, ``"untruncated_normal"`` or ``"uniform"``.
        seed: Seed for the draw.

    Example:
        >>> layer = keras.layers.Dense(64, activation="tanh",
        ...                            kernel_initializer=ActivationVarianceScaling("tanh"))

    References:
        He et al. (2015); Poole et al. (2016), "Exponential expressivity in deep neural networks
        through transient chaos".
    """

    def __init__(self, activation: str = "relu", distribution: str = "truncated_normal",
                 seed: int | None = None):
        self.activation = resolve_name(activation)
        scale = 1.0 / properties(self.activation)["second_moment"]
        super().__init__(scale=scale, mode="fan_in", distribution=distribution, seed=seed)

    def get_config(self) -> dict[str, Any]:
        # Only the constructor's own arguments: scale and mode follow from the activation.
        parent = super().get_config()
        return {"activation": self.activation, "distribution": parent["distribution"],
                "seed": parent["seed"]}


# --------------------------------------------------------------------------------------------
# Variance propagation through a deep MLP, compiled per architecture
# --------------------------------------------------------------------------------------------
