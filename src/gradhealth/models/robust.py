"""Robust deep architectures: every remedy of the course built into one network.

A plain deep network multiplies one factor per layer into its gradient (``W^T diag(f')``), so
the product vanishes or explodes with depth. :func:`robust_mlp` combines the remedies that keep
every factor near 1, each documented where it is applied:

1. **Activation**: a ReLU-family non-linearity (derivative 1 where active; Glorot, Bordes &
   Bengio 2011) instead of a saturating sigmoid (derivative at most 0.25).
2. **Initializer matched to the activation**
   (:func:`gradhealth.core.knowledge.matched_initializer`): He normal for the ReLU family (He et
   al. 2015), LeCun normal for SELU (Klambauer et al. 2017), Glorot uniform for tanh, sigmoid and
   the rest (Glorot & Bengio 2010).
3. **Pre-activation residual blocks** ``h + Dense(Act(Norm(h)))`` (He et al. 2016, "Identity
   Mappings in Deep Residual Networks"): the block's Jacobian is ``I + dF/dh``, so the identity
   path carries the output gradient to the first layer however deep the network is.
4. **Normalization** inside every residual branch: batch (Ioffe & Szegedy 2015) or layer
   normalization (Ba, Kiros & Hinton 2016), which keeps pre-activations in the non-saturated
   range whatever the scale of the residual stream.
5. **Clipping and optimizer** (:func:`robust_optimizer`): Adam whose global gradient norm is
   clipped by :class:`gradhealth.ClippingOptimizer` (Pascanu, Mikolov & Bengio 2013;
   Kingma & Ba 2015), a safety net against the occasional destructive step.

:func:`robust_cnn` applies the same recipe to a small convolutional network for image inputs
such as the 8x8 sklearn digits.
"""

from __future__ import annotations

from typing import Any

import keras

from gradhealth._internal.model_checks import check_activation
from gradhealth._internal.seeding import seeded_initializer
from gradhealth._internal.validation import check_choice, check_positive_float, check_positive_int
from gradhealth.core.knowledge import activation_name, matched_initializer
from gradhealth.optim.clipping import ClippingOptimizer

__all__ = ["DEFAULT_CLIPNORM", "DEFAULT_LEARNING_RATE", "NORMALIZATIONS", "robust_cnn",
           "robust_mlp", "robust_optimizer"]

NORMALIZATIONS: tuple[str | None, ...] = ("batch", "layer", None)
"""Normalization choices of the robust builders: ``"batch"``, ``"layer"`` or ``None``."""

DEFAULT_CLIPNORM: float = 1.0
"""Global gradient-norm threshold of :func:`robust_optimizer`. Pascanu, Mikolov & Bengio (2013)
found thresholds of 1-10 work across tasks; 1.0 is the lower end, inactive on healthy networks
(whose per-batch global norm on standardized digits is of order 0.1-1) and binding only on a
spike."""

DEFAULT_LEARNING_RATE: float = 1e-3
"""Adam's default step size (Kingma & Ba 2015), used by :func:`robust_optimizer`."""


def _norm_layer(normalization: str | None, name: str) -> keras.layers.Layer | None:
    if normalization == "batch":
        return keras.layers.BatchNormalization(name=name)
    if normalization == "layer":
        return keras.layers.LayerNormalization(name=name)
    return None


def _pre_activation_block(h: Any, layer: keras.layers.Layer, normalization: str | None,
                          activation: Any, i: int, residual: bool) -> Any:
    """``h + layer(act(norm(h)))`` (or without the skip): the pre-activation block
    of He et al. 2016, "Identity Mappings in Deep Residual Networks"."""
    f = h
    norm = _norm_layer(normalization, f"norm_{i}")
    if norm is not None:
        f = norm(f)
    f = keras.layers.Activation(activation, name=f"act_{i}")(f)
    f = layer(f)
    return keras.layers.Add(name=f"skip_{i}")([h, f]) if residual else f


def _check_common(activation: Any, normalization: Any, seed: Any) -> str:
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_activation(activation)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(
            f"Argument `seed` must be a non-negative integer or None. Received: seed={seed!r}"
        )
    return activation_name(activation)


def robust_mlp(
    depth: int = 50,
    width: int = 64,
    activation: str | Any = "relu",
    normalization: str | None = "layer",
    residual: bool = True,
    kernel_initializer: str | Any | None = None,
    input_dim: int = 64,
    num_classes: int = 10,
    output_activation: str | None = None,
    seed: int | None = 0,
    name: str | None = None,
) -> keras.Model:
    """A deep MLP built to keep its gradients healthy at any depth.

    Structure (``depth`` hidden ``Dense`` layers in all, like ``deep_mlp(depth)``)::

        features -> Dense(width) "hidden_1"                                  (stem)
                 -> depth-1 x [ h + Dense(Act(Norm(h))) ]   "hidden_2".."hidden_{depth}"
                 -> Norm -> Act -> Dense(num_classes) "output"

    Layers are named ``hidden_i``, ``norm_i``, ``act_i`` and ``skip_i`` so a checkup reads like
    the one of ``deep_mlp``. With ``residual=False`` and ``normalization=None`` the blocks become
    ``Dense(Act(h))``: a plain network with only the matched initializer, useful to see what each
    remedy contributes.

    Args:
        depth: Number of hidden Dense layers (>= 1).
        width: Units per hidden layer (the residual stream's width).
        activation: Hidden activation; ReLU by default. A saturating activation is allowed
            (to study it) but the residual path is then what keeps the gradient alive.
        normalization: ``"layer"`` (default: independent of the batch size, identical in
            training and inference; Ba et al. 2016), ``"batch"`` (Ioffe & Szegedy 2015; needs
            batches of a few dozen examples) or ``None``.
        residual: Wrap every block after the stem in an identity skip connection (He et al.
            2016).
        kernel_initializer: Initializer for the hidden kernels; ``None`` (default) picks the
            one matched to ``activation`` with :func:`gradhealth.core.knowledge.matched_initializer`.
        input_dim: Input features (64 for sklearn digits).
        num_classes: Output units.
        output_activation: Output activation; ``None`` (default, as ``deep_mlp``) gives logits,
            to pair with ``gradhealth.models.classification_loss()``.
        seed: Base seed; layer ``i`` uses ``seed + i``. ``None`` leaves initializers unseeded.
        name: Model name (default ``"robust_{activation}_mlp_{depth}"``).

    Returns:
        A built, uncompiled functional ``keras.Model``. Compile it with
        :func:`robust_optimizer` to add gradient clipping.

    Raises:
        ValueError: A non-positive size, an unknown activation, normalization or initializer.

    Example:
        >>> model = robust_mlp(50)
        >>> model.compile(robust_optimizer(), loss=classification_loss())
        >>> gradhealth.diagnosis(model, x, y).status
        'healthy'

    References:
        He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep Residual Networks", ECCV.
        Ba, Kiros & Hinton 2016, "Layer Normalization", arXiv:1607.06450.
        Ioffe & Szegedy 2015, "Batch Normalization", ICML.
        He, Zhang, Ren & Sun 2015, "Delving Deep into Rectifiers", ICCV.
    """
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_positive_int("input_dim", input_dim)
    check_positive_int("num_classes", num_classes)
    act_name = _check_common(activation, normalization, seed)
    init = kernel_initializer if kernel_initializer is not None else matched_initializer(activation)

    inputs = keras.Input(shape=(input_dim,), name="features")
    h = keras.layers.Dense(width, kernel_initializer=seeded_initializer(init, seed, 1),
                           name="hidden_1")(inputs)
    for i in range(2, depth + 1):
        dense = keras.layers.Dense(width, kernel_initializer=seeded_initializer(init, seed, i),
                                   name=f"hidden_{i}")
        h = _pre_activation_block(h, dense, normalization, activation, i, residual)
    norm = _norm_layer(normalization, "norm_out")
    if norm is not None:
        h = norm(h)
    h = keras.layers.Activation(activation, name="act_out")(h)
    outputs = keras.layers.Dense(num_classes, activation=output_activation,
                                 kernel_initializer=seeded_initializer("glorot_uniform", seed, depth + 1),
                                 name="output")(h)
    return keras.Model(inputs, outputs, name=name or f"robust_{act_name}_mlp_{depth}")


def robust_cnn(
    input_shape: tuple[int, int, int] = (8, 8, 1),
    blocks: int = 4,
    filters: int = 16,
    activation: str | Any = "relu",
    normalization: str | None = "batch",
    kernel_initializer: str | Any | None = None,
    num_classes: int = 10,
    output_activation: str | None = None,
    seed: int | None = 0,
    name: str | None = None,
) -> keras.Model:
    """A small residual CNN with the same recipe as :func:`robust_mlp`.

    ``Conv3x3(filters)`` stem, ``blocks`` pre-activation residual blocks
    ``h + Conv3x3(Act(Norm(h)))`` at constant resolution (inputs as small as the 8x8 digits do
    not need down-sampling), then Norm -> Act -> global average pooling -> ``Dense(num_classes)``.
    Convolutions are named ``conv_i`` (``conv_1`` is the stem).

    Args:
        input_shape: ``(height, width, channels)``; ``(8, 8, 1)`` for sklearn digits.
        blocks: Residual blocks after the stem (>= 1).
        filters: Channels of every convolution.
        activation: Hidden activation (ReLU by default).
        normalization: ``"batch"`` (default for CNNs), ``"layer"`` or ``None``.
        kernel_initializer: Convolution initializer; ``None`` picks :func:`gradhealth.core.knowledge.matched_initializer`.
        num_classes: Output units.
        output_activation: Output activation; ``None`` (default, as ``deep_mlp``) gives logits,
            to pair with ``gradhealth.models.classification_loss()``.
        seed: Base seed for the initializers (``None``: unseeded).
        name: Model name (default ``"robust_cnn_{blocks}"``).

    Returns:
        A built, uncompiled functional ``keras.Model``.

    Raises:
        ValueError: A bad shape or size, an unknown activation, normalization or initializer.

    References:
        He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition", CVPR.
    """
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape)):
        raise ValueError(
            "Argument `input_shape` must be (height, width, channels) of positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    check_positive_int("blocks", blocks)
    check_positive_int("filters", filters)
    check_positive_int("num_classes", num_classes)
    _check_common(activation, normalization, seed)
    init = kernel_initializer if kernel_initializer is not None else matched_initializer(activation)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    h = keras.layers.Conv2D(filters, 3, padding="same",
                            kernel_initializer=seeded_initializer(init, seed, 1),
                            name="conv_1")(inputs)
    for i in range(2, blocks + 2):
        conv = keras.layers.Conv2D(filters, 3, padding="same",
                                   kernel_initializer=seeded_initializer(init, seed, i),
                                   name=f"conv_{i}")
        h = _pre_activation_block(h, conv, normalization, activation, i, residual=True)
    norm = _norm_layer(normalization, "norm_out")
    if norm is not None:
        h = norm(h)
    h = keras.layers.Activation(activation, name="act_out")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(num_classes, activation=output_activation,
                                 kernel_initializer=seeded_initializer("glorot_uniform", seed, blocks + 2),
                                 name="output")(h)
    return keras.Model(inputs, outputs, name=name or f"robust_cnn_{blocks}")


def robust_optimizer(learning_rate: float = DEFAULT_LEARNING_RATE,
                     clipnorm: float | None = DEFAULT_CLIPNORM) -> keras.optimizers.Optimizer:
    """Adam with the global gradient norm clipped: the robust recipe's optimizer.

    Clipping goes through the toolkit's :class:`gradhealth.ClippingOptimizer`
    (``method="global_norm"``), which rescales the whole update when its norm exceeds
    ``clipnorm`` and so keeps its direction; it runs inside the compiled train step of every
    backend.

    Args:
        learning_rate: Adam's step size.
        clipnorm: Threshold on the global norm of all gradients together; ``None`` returns a
            plain Adam without clipping.

    Returns:
        A fresh optimizer: ``ClippingOptimizer(Adam(learning_rate), "global_norm")`` or
        ``Adam(learning_rate)``.

    Raises:
        ValueError: A non-positive learning rate or threshold.

    Example:
        >>> model.compile(optimizer=robust_optimizer(1e-3, clipnorm=1.0), loss=...)

    References:
        Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR.
        Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
        networks", ICML.
    """
    learning_rate = check_positive_float("learning_rate", learning_rate)
    adam = keras.optimizers.Adam(learning_rate=learning_rate)
    if clipnorm is None:
        return adam
    return ClippingOptimizer(adam, method="global_norm",
                             max_norm=check_positive_float("clipnorm", clipnorm))
