"""Variance propagation: forward and backward variance, layer by layer, measured and predicted.

References:
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks".
    He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers".
    Hanin & Rolnick (2018), "How to Start Training: The Effect of Initialization and
    Architecture".
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from gradhealth._internal.validation import as_batch_array, check_positive_int
from gradhealth.adapters import autodiff
from gradhealth.core import variance as core_variance
from gradhealth.core.stats import robust_norm
from gradhealth.data import digits_batch
from gradhealth.init.activations import evaluate, get_activation, resolve_name
from gradhealth.init.initializers import get_initializer, resolve_initializer_name

__all__ = ["default_batch", "make_mlp_probe", "mlp_params", "variance_propagation"]


def mlp_params(depth: int, width: int, initializer: str | keras.initializers.Initializer,
               input_dim: int, num_classes: int, seed: int = 0) -> list[np.ndarray]:
    """The weights :func:`gradhealth.models.deep_mlp` would draw, as NumPy arrays.

    Hidden kernel ``i`` (1-based) uses ``initializer`` seeded with ``seed + i``, the output
    kernel ``glorot_uniform`` with ``seed + depth + 1``, every bias zeros: exactly the weights of
    ``deep_mlp(depth, width, kernel_initializer=initializer, seed=seed)``.

    Returns:
        ``[W_1, b_1, ..., W_depth, b_depth, W_out, b_out]`` (fresh arrays on every call).
    """
    key = ((depth, width, initializer, input_dim, num_classes, seed, keras.backend.backend())
           if isinstance(initializer, str) else None)
    cached = _PARAMS_CACHE.get(key) if key is not None else None
    if cached is None:
        cached = _draw_params(depth, width, initializer, input_dim, num_classes, seed)
        if key is not None:
            _remember_params(key, cached)
    else:
        _PARAMS_CACHE.move_to_end(key)
    return [p.copy() for p in cached]


# Recently drawn weights by (depth, width, initializer name, fans, seed, backend), newest last,
# at most _PARAMS_CACHE_BYTES in all. Sweeps draw the same weights for every activation (the
# experiment grid measures each initializer and seed under four activations, notebook 5 Glorot
# under tanh and ReLU); a Keras initializer call costs 2-3 ms of eager ops per layer, the
# 31 draws of a 30 x 256 network 80-250 ms on the loaded 2-core machine, a copy 2 ms.
_PARAMS_CACHE: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
_PARAMS_CACHE_BYTES = 64 * 2**20


def _remember_params(key: tuple, params: list[np.ndarray]) -> None:
    size = sum(p.nbytes for p in params)
    if size > _PARAMS_CACHE_BYTES:
        return
    _PARAMS_CACHE[key] = params
    total = sum(p.nbytes for ps in _PARAMS_CACHE.values() for p in ps)
    while total > _PARAMS_CACHE_BYTES:
        _, dropped = _PARAMS_CACHE.popitem(last=False)
        total -= sum(p.nbytes for p in dropped)


def _draw_params(depth: int, width: int, initializer: str | keras.initializers.Initializer,
                 input_dim: int, num_classes: int, seed: int) -> list[np.ndarray]:
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


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """The process' BLAS thread pools, found once (finding them costs 5-30 ms)."""
    return ThreadpoolController()


@functools.lru_cache(maxsize=32)
def _cached_probe(activation: str, depth: int) -> Callable[..., dict[str, Any]]:
    """One compiled probe per (activation, depth): every initializer and seed reuses it."""
    return make_mlp_probe(get_activation(activation), depth)


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
        activation: A :mod:`gradhealth.init.activations` catalog name.
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
    act = resolve_name(activation)
    init = resolve_initializer_name(initializer)
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    seed_list = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seed_list:
        raise ValueError(f"Argument `seeds` must not be empty. Received: seeds={seeds!r}")
    x, y = default_batch(x, y, batch_size, seed_list[0])
    shapes = [(x.shape[1], width)] + [(width, width)] * (depth - 1)
    # The mean-field recursion takes one quadrature dot product of 24,000 points per layer and
    # per derivative. OpenBLAS splits a dot product that long over its threads, and on a busy
    # 2-core machine waking them cost 8 ms per call (1.7 s of the course's four calls) against
    # 7 microseconds on one thread; the sum is the same.
    with _blas_controller().limit(limits=1, user_api="blas"):
        predicted = core_variance.propagate_variance(
            lambda z: evaluate(act, z), lambda z: autodiff.derivative(get_activation(act), z),
            [core_variance.expected_weight_variance(init, s) for s in shapes],
            [s[0] for s in shapes], input_second_moment=float(np.mean(x.astype(np.float64) ** 2)),
        )["forward_variance"]
    probe = _cached_probe(act, depth)
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


def default_batch(x: Any, y: Any, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if x is None:
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
