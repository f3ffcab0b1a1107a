"""Model builders used by the course and the tests: deep MLPs and the three demo networks."""

from __future__ import annotations

from typing import Any

import keras

from gradhealth._internal.model_checks import check_activation
from gradhealth._internal.seeding import seeded_initializer
from gradhealth._internal.validation import check_positive_int

NORMALIZATIONS: tuple[str | None, ...] = (None, "batch", "layer")
DEMO_NETWORKS: tuple[str, ...] = ("sigmoid", "relu", "exploding")

__all__ = ["DEMO_NETWORKS", "NORMALIZATIONS", "classification_loss", "deep_mlp", "demo_network"]


def deep_mlp(
    depth: int,
    width: int = 64,
    activation: str | Any = "relu",
    kernel_initializer: str | Any = "he_normal",
    normalization: str | None = None,
    residual: bool = False,
    input_dim: int = 64,
    num_classes: int = 10,
    output_activation: str | None = None,
    seed: int | None = 0,
    name: str | None = None,
) -> keras.Model:
    """A deep multilayer perceptron for gradient experiments.

    The network is ``Input(input_dim)`` -> ``depth`` hidden ``Dense(width)`` layers (each
    optionally followed by normalization, and with ``residual=True`` wrapped in an identity skip
    connection ``h + f(h)``) -> ``Dense(num_classes, output_activation)``. Layers are named
    ``hidden_1`` ... ``hidden_{depth}`` and ``output`` so reports read naturally.

    Args:
        depth: Number of hidden Dense layers (>= 1).
        width: Units per hidden layer.
        activation: Hidden activation (a Keras activation name or callable).
        kernel_initializer: Initializer for every hidden kernel (name or object).
        normalization: ``None``, ``"batch"`` (BatchNormalization, Ioffe & Szegedy 2015) or
            ``"layer"`` (LayerNormalization, Ba et al. 2016), applied before the activation.
        residual: Add identity skip connections around every hidden block after the first
            (He et al. 2016).
        input_dim: Number of input features (64 for sklearn digits).
        num_classes: Output units.
        output_activation: Activation of the output layer; ``None`` (default) gives logits, to
            pair with :func:`classification_loss`.
        seed: Base seed; layer ``i`` uses ``seed + i``. ``None`` leaves initializers unseeded.
        name: Model name (default ``"{activation}_mlp_{depth}"``).

    Returns:
        A built, uncompiled functional ``keras.Model``.

    Raises:
        ValueError: For a non-positive size or an unknown normalization/initializer.

    Example:
        >>> model = deep_mlp(30, activation="sigmoid", kernel_initializer="glorot_uniform")
        >>> len(model.trainable_variables)
        62
    """
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_positive_int("input_dim", input_dim)
    check_positive_int("num_classes", num_classes)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Argument `normalization` must be one of {list(NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}"
        )
    check_activation(activation)
    act_name = activation if isinstance(activation, str) else getattr(activation, "__name__", "act")
    inputs = keras.Input(shape=(input_dim,), name="features")
    h = inputs
    for i in range(1, depth + 1):
        dense = keras.layers.Dense(
            width,
            kernel_initializer=seeded_initializer(kernel_initializer, seed, i),
            activation=None if normalization else activation,
            name=f"hidden_{i}",
        )
        f = dense(h)
        if normalization == "batch":
            f = keras.layers.BatchNormalization(name=f"bn_{i}")(f)
        elif normalization == "layer":
            f = keras.layers.LayerNormalization(name=f"ln_{i}")(f)
        if normalization:
            f = keras.layers.Activation(activation, name=f"act_{i}")(f)
        h = keras.layers.Add(name=f"skip_{i}")([h, f]) if residual and i > 1 else f
    outputs = keras.layers.Dense(
        num_classes,
        activation=output_activation,
        kernel_initializer=seeded_initializer("glorot_uniform", seed, depth + 1),
        name="output",
    )(h)
    return keras.Model(inputs, outputs, name=name or f"{act_name}_mlp_{depth}")


def demo_network(kind: str, depth: int = 30, width: int = 64, input_dim: int = 64,
                 num_classes: int = 10, seed: int = 0) -> keras.Model:
    """One of the course's three demonstration networks.

    Args:
        kind: ``"sigmoid"`` (sigmoid + Glorot uniform: gradients vanish), ``"relu"`` (ReLU +
            He normal: healthy) or ``"exploding"`` (ReLU + ``RandomNormal(stddev=1.0)``: every
            layer multiplies the signal by about ``sqrt(width / 2)``, so gradients explode).
        depth: Hidden layers (the exploding network uses ``min(depth, 10)``: deeper overflows
            float32 to inf, which is a different failure).
        width: Units per hidden layer.
        input_dim: Input features.
        num_classes: Output classes.
        seed: Base seed for the initializers.

    Returns:
        A built, uncompiled model.

    Raises:
        ValueError: For an unknown ``kind``.
    """
    if kind == "sigmoid":
        return deep_mlp(depth, width, "sigmoid", "glorot_uniform", input_dim=input_dim,
                        num_classes=num_classes, seed=seed, name=f"sigmoid_glorot_{depth}")
    if kind == "relu":
        return deep_mlp(depth, width, "relu", "he_normal", input_dim=input_dim,
                        num_classes=num_classes, seed=seed, name=f"relu_he_{depth}")
    if kind == "exploding":
        d = min(depth, 10)
        init = keras.initializers.RandomNormal(stddev=1.0)
        return deep_mlp(d, width, "relu", init, input_dim=input_dim,
                        num_classes=num_classes, seed=seed, name=f"relu_normal1_{d}")
    raise ValueError(f"Argument `kind` must be one of {list(DEMO_NETWORKS)}. Received: kind={kind!r}")


def classification_loss() -> keras.losses.Loss:
    """The loss that goes with these models' logit outputs.

    ``SparseCategoricalCrossentropy(from_logits=True)`` computes log-softmax stably. With a
    softmax output layer instead, Keras clips probabilities to [1e-7, 1 - 1e-7] before the log on
    JAX and torch, so a saturated softmax (an exploding network) gets an exactly-zero gradient and
    looks "dead" rather than "exploding".

    Returns:
        A new Keras loss object.
    """
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

