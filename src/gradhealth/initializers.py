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

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._validation import (
    as_batch_array,
    check_positive_float,
    check_positive_int,
)
from gradhealth.adapters import autodiff
from gradhealth.core import variance as core_variance

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
        activation: A :mod:`gradhealth.activations` catalog name.
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
        from gradhealth.activations import properties, resolve_name

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


def mlp_params(depth: int, width: int, initializer: str | keras.initializers.Initializer,
               input_dim: int, num_classes: int, seed: int = 0) -> list[np.ndarray]:
    """The weights :func:`gradhealth.models.deep_mlp` would draw, as NumPy arrays.

    Hidden kernel ``i`` (1-based) uses ``initializer`` seeded with ``seed + i``, the output
    kernel ``glorot_uniform`` with ``seed + depth + 1``, every bias zeros: exactly the weights of
    ``deep_mlp(depth, width, kernel_initializer=initializer, seed=seed)``.

    Returns:
        ``[W_1, b_1, ..., W_depth, b_depth, W_out, b_out]``.
    """
    params = []
    fan = input_dim
    for i in range(1, depth + 1):
        if isinstance(initializer, str):
            init = get_initializer(initializer, seed=seed + i)
        else:
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = seed + i
            init = initializer.__class__.from_config(config)
        params.append(np.asarray(keras.ops.convert_to_numpy(init((fan, width), dtype="float32"))))
        params.append(np.zeros(width, np.float32))
        fan = width
    out = keras.initializers.GlorotUniform(seed=seed + depth + 1)((fan, num_classes), "float32")
    params.append(np.asarray(keras.ops.convert_to_numpy(out)))
    params.append(np.zeros(num_classes, np.float32))
    return params


def make_mlp_probe(activation: Callable[[Any], Any], depth: int, compiled: bool = True
                   ) -> Callable[..., dict[str, Any]]:
    """A compiled forward/backward probe of a ``depth``-layer MLP with the given activation.

    The probe adds a zero "perturbation" ``e_l`` to every pre-activation
    (``z_l = h_{l-1} W_l + b_l + e_l``); the gradient of the loss with respect to ``e_l`` is the
    back-propagated gradient ``dL/dz_l`` of every example, which is what Glorot & Bengio (2010)
    and He et al. (2015) track backwards. Hidden layers 2..depth (all ``width x width``) run as
    one ``keras.ops.scan`` over stacked weights, so compiling costs the same at any depth, and
    one compiled function serves every initializer and seed of the architecture: only the weight
    values change between calls.

    Args:
        activation: A Keras activation function.
        depth: Hidden layers.
        compiled: Compile with ``tf.function``/``jax.jit`` (False: eager, for benchmarks).

    Returns:
        ``probe(params, x, y) -> dict`` taking :func:`mlp_params`' list and returning float64
        arrays over hidden layers 1..depth: ``preactivation_variance``,
        ``activation_variance``, ``gradient_variance`` (of dL/dz), ``kernel_grad_norm``, and
        the scalar ``loss``.
    """
    check_positive_int("depth", depth)
    ops = keras.ops

    def forward(params, x, y):
        w1, b1, ws, bs, w_out, b_out, e1, es = params
        z = ops.matmul(x, w1) + b1 + e1
        h = activation(z)
        first = ops.reshape(ops.stack([ops.var(z), ops.var(h)]), (1, 2))
        if depth > 1:
            def layer(carry, inputs):
                w, b, e = inputs
                z_l = ops.matmul(carry, w) + b + e
                # The pre-activation is the per-step output: Keras' TensorFlow scan requires
                # outputs shaped like the carry.
                return activation(z_l), z_l

            h, zs = ops.scan(layer, h, (ws, bs, es))
            rest = ops.stack([ops.var(zs, axis=(1, 2)), ops.var(activation(zs), axis=(1, 2))],
                             axis=1)
            moments = ops.concatenate([first, rest], axis=0)
        else:
            moments = first
        logits = ops.matmul(h, w_out) + b_out
        loss = ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return loss, [moments]

    step = autodiff.value_and_grad(forward, compiled=compiled)

    def probe(params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        from gradhealth.core.stats import robust_norm

        if len(params) != 2 * depth + 2:
            raise ValueError(
                f"Argument `params` must hold {2 * depth + 2} arrays for a {depth}-layer MLP "
                f"(see mlp_params). Received: len(params)={len(params)}"
            )
        width = params[0].shape[1]
        hidden_w = [np.asarray(p) for p in params[2:2 * depth:2]]
        hidden_b = [np.asarray(p) for p in params[3:2 * depth:2]]

        def stacked(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
            return np.stack(arrays) if arrays else np.zeros((0, *shape), np.float32)

        packed = [params[0], params[1], stacked(hidden_w, (width, width)),
                  stacked(hidden_b, (width,)), params[-2], params[-1],
                  np.zeros((x.shape[0], width), np.float32),
                  np.zeros((depth - 1, x.shape[0], width), np.float32)]
        loss, aux, grads = step(packed, x, y)
        moments = np.asarray(aux[0], np.float64)
        dz = [grads[6]] + list(grads[7])
        kernel_grads = [grads[0]] + list(grads[2])
        return {
            "loss": loss,
            "preactivation_variance": moments[:, 0],
            "activation_variance": moments[:, 1],
            "gradient_variance": np.array([np.var(g.astype(np.float64)) for g in dz]),
            "kernel_grad_norm": np.array([robust_norm(g) for g in kernel_grads]),
        }

    return probe


def variance_propagation(activation: str = "relu", initializer: str = "he_normal",
                         depth: int = 20, width: int = 256, x: Any = None, y: Any = None,
                         seeds: int | Sequence[int] = 0, batch_size: int = 256) -> pd.DataFrame:
    """Forward activation variance and backward gradient variance, layer by layer.

    Measures one compiled forward/backward pass of ``deep_mlp(depth, width, activation,
    initializer, seed=seed)`` (same weights) per seed, and adds the mean-field prediction from
    :func:`gradhealth.core.variance.propagate_variance` for the forward pre-activations.

    A single finite-width network fluctuates around the mean-field prediction: the log of the
    variance ratio between layers 1 and L has a standard deviation of about ``sqrt(5 L / width)``
    (Hanin & Rolnick 2018), a factor of about 2 for L = 50 and width 512. Average over several
    ``seeds`` to see the trend the initializer sets.

    Args:
        activation: A :mod:`gradhealth.activations` catalog name.
        initializer: An initializer name (:func:`available_initializers`).
        depth: Hidden layers.
        width: Units per hidden layer.
        x: Input batch (default: ``batch_size`` standardized digits); ``y``: integer labels.
        seeds: One weight seed or several (one compiled probe serves them all).
        batch_size: Size of the default batch.

    Returns:
        DataFrame with columns ``activation, initializer, seed, layer, preactivation_variance,
        predicted_preactivation_variance, activation_variance, gradient_variance,
        kernel_grad_norm`` (one row per seed and hidden layer, layer 1 = nearest the input).

    Raises:
        ValueError: Unknown activation or initializer name, invalid sizes, bad data.

    References:
        Glorot & Bengio (2010), figures 3-7; He et al. (2015), section 2.2; Hanin & Rolnick
        (2018), "How to Start Training: The Effect of Initialization and Architecture".
    """
    from gradhealth.activations import evaluate, get_activation, resolve_name

    act = resolve_name(activation)
    init = resolve_initializer_name(initializer)
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    seed_list = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seed_list:
        raise ValueError(f"Argument `seeds` must not be empty. Received: seeds={seeds!r}")
    x, y = _default_batch(x, y, batch_size, seed_list[0])
    shapes = [(x.shape[1], width)] + [(width, width)] * (depth - 1)
    predicted = core_variance.propagate_variance(
        lambda z: evaluate(act, z), lambda z: autodiff.derivative(get_activation(act), z),
        [core_variance.expected_weight_variance(init, s) for s in shapes],
        [s[0] for s in shapes], input_second_moment=float(np.mean(x.astype(np.float64) ** 2)),
    )["forward_variance"]
    probe = make_mlp_probe(get_activation(act), depth)
    frames = []
    for seed in seed_list:
        params = mlp_params(depth, width, init, x.shape[1], int(np.max(y)) + 1, int(seed))
        result = probe(params, x, y)
        frames.append(pd.DataFrame({
            "activation": act, "initializer": init, "seed": int(seed),
            "layer": np.arange(1, depth + 1),
            "preactivation_variance": result["preactivation_variance"],
            "predicted_preactivation_variance": predicted,
            "activation_variance": result["activation_variance"],
            "gradient_variance": result["gradient_variance"],
            "kernel_grad_norm": result["kernel_grad_norm"],
        }))
    return pd.concat(frames, ignore_index=True)


def _default_batch(x: Any, y: Any, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if x is None:
        from gradhealth.data import digits_batch

        return digits_batch(batch_size, seed=seed)
    xa = as_batch_array("x", x)
    if y is None:
        raise ValueError("Argument `y` is required when `x` is given. Received: y=None")
    ya = as_batch_array("y", y)
    if xa.ndim != 2 or ya.shape[0] != xa.shape[0]:
        raise ValueError(
            "Argument `x` must be a 2-D batch (examples, features) with one label in `y` per "
            f"example. Received: x.shape={xa.shape}, y.shape={ya.shape}"
        )
    return xa, ya.astype(np.int32)


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
