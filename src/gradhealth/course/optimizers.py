"""Compare Keras optimizers on a network that is hard to train, under the same seeds and budget.

:func:`compare_optimizers` trains one model architecture from the *same* initial weights, on the
*same* sequence of mini-batches, for the *same* number of steps, once per optimizer (SGD, SGD
with momentum, Nesterov, RMSprop, Adam, AdamW, Lion by default), and records

* the loss curve (the loss on the whole training set every ``log_every`` steps),
* gradient health over time: every ``log_every`` steps, the gradient norms of the first and last
  hidden layers, their ratio and the global norm on a fixed probe batch, from
  :func:`gradhealth.layer_gradients` (the checkup's own gradients),
* the number of steps to reach a target loss, and
* the final test accuracy.

The result (:class:`OptimizerComparison`) gives one tidy table (:meth:`~OptimizerComparison.table`),
long-form curves for plotting (:meth:`~OptimizerComparison.curves`), JSON export, and one figure
(:func:`gradhealth.course.plots.optimizer_plots.plot_optimizer_comparison`).

Why probe with :func:`gradhealth.layer_gradients` rather than attach
:class:`gradhealth.GradientHealthMonitor`? The monitor measures every applied gradient inside the
train step, which makes each ``fit`` compile a larger step function; with seven optimizers that
compile time (measured 3-5x the plain one on TensorFlow) dominates a short comparison. The probe
reuses one compiled gradient function for all seven runs, and measures every run on the same
batch, so the curves are directly comparable. Use the monitor to watch a single long run.

References:
    Robbins & Monro 1951 (SGD); Polyak 1964 (momentum); Nesterov 1983, Sutskever et al. 2013
    (Nesterov momentum); Tieleman & Hinton 2012 (RMSprop); Kingma & Ba 2015 (Adam);
    Loshchilov & Hutter 2019 (AdamW); Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms" (Lion).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.io import atomic_write_text
from gradhealth._internal.training import build_optimizer
from gradhealth._internal.validation import (
    check_batch_pair,
    check_positive_float,
    check_positive_int,
)
from gradhealth.adapters.autodiff import repeated
from gradhealth.core.stats import combine_norms, robust_norm
from gradhealth.course.plots.optimizer_plots import plot_optimizer_comparison
from gradhealth.diagnosis import layer_gradients
from gradhealth.models import deep_mlp

__all__ = ["CURVE_COLUMNS", "DEFAULT_LEARNING_RATES", "DEFAULT_TARGET_LOSS", "HARD_NETWORK",
           "MOMENTUM", "OPTIMIZER_NAMES", "OptimizerComparison", "OptimizerRun",
           "compare_optimizers", "hard_network", "make_optimizer", "steps_to_target"]

OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw",
                                    "lion")
"""The optimizers compared by default, in historical order."""

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adamw": 1e-3,
    "lion": 3e-4,
}
"""Each optimizer's customary step size, so each is compared at a setting its users would pick.

Plain SGD: 0.1, the usual starting point on standardized inputs (Bengio 2012, "Practical
recommendations for gradient-based training"). Momentum and Nesterov: 0.01 with momentum 0.9,
the same effective step ``lr / (1 - momentum) = 0.1`` (Sutskever et al. 2013). RMSprop, Adam,
AdamW: 1e-3 (Tieleman & Hinton 2012; Kingma & Ba 2015; Loshchilov & Hutter 2019). Lion: 3e-4,
because its sign update has a larger norm, Chen et al. (2023) recommend a learning rate 3-10x
smaller than AdamW's; a short comparison takes the larger end of that range."""

CURVE_COLUMNS: tuple[str, ...] = ("step", "train_loss", "grad_first", "grad_last", "grad_global",
                                  "first_last_ratio")
"""Columns of :attr:`OptimizerRun.curve`."""

MOMENTUM: float = 0.9
"""Momentum coefficient of the ``momentum`` and ``nesterov`` runs (Sutskever et al. 2013)."""

DEFAULT_TARGET_LOSS: float = 1.0
"""Default target training loss for :func:`compare_optimizers`: the cross-entropy at which a
10-class classifier gives the right class a probability of ``exp(-1) ~ 0.37`` on average, well
below chance level ``ln 10 ~ 2.30``; reaching it means the network has started to learn."""

HARD_NETWORK: dict[str, Any] = {"depth": 8, "width": 32, "activation": "relu",
                                "kernel_initializer": "glorot_uniform"}
"""The default hard-to-train network: an 8-layer ReLU MLP with Keras' default Glorot-uniform
kernels. Glorot's variance ``2 / (fan_in + fan_out) = 1 / fan_in`` is half what ReLU needs (He
et al. 2015), so the forward signal shrinks by about sqrt(2) per layer (2**-4 ~ 0.06 over 8
layers) and the logits start near zero: SGD and its momentum variants stay near the ln(10)
plateau for the first hundred steps while per-parameter step sizes (RMSprop, Adam, AdamW) escape
it. (A deep *sigmoid* network is harder still: no optimizer leaves its plateau within a
classroom budget, which is the point of notebook 1.) Small enough to train seven times in
seconds: each run's cost is mostly compiling its train step, which grows with depth."""


def make_optimizer(name: str, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer for one of :data:`OPTIMIZER_NAMES`.

    Args:
        name: ``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"nesterov"``,
            ``"rmsprop"``, ``"adam"``, ``"adamw"`` or ``"lion"``.
        learning_rate: Step size; ``None`` uses :data:`DEFAULT_LEARNING_RATES`.

    Returns:
        The ``keras.optimizers`` instance.

    Raises:
        ValueError: Unknown name or non-positive learning rate.

    Example:
        >>> make_optimizer("nesterov").get_config()["nesterov"]
        True
    """
    if name not in OPTIMIZER_NAMES:
        raise ValueError(
            f"Argument `name` must be one of {list(OPTIMIZER_NAMES)}. Received: name={name!r}"
        )
    lr = DEFAULT_LEARNING_RATES[name] if learning_rate is None else check_positive_float(
        "learning_rate", learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=lr, momentum=MOMENTUM)
    if name == "nesterov":
        return keras.optimizers.SGD(learning_rate=lr, momentum=MOMENTUM, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr)
    return keras.optimizers.Lion(learning_rate=lr)


def steps_to_target(steps: Sequence[int], losses: Sequence[float], target: float) -> int | None:
    """The first logged step whose loss is at or below ``target``.

    Args:
        steps: Logged step numbers, increasing.
        losses: The loss at each logged step (NaN/inf never count as reaching the target).
        target: The target loss.

    Returns:
        The step, or ``None`` if the target was never reached.

    Raises:
        ValueError: ``steps`` and ``losses`` differ in length.

    Example:
        >>> steps_to_target([0, 10, 20], [2.3, 0.9, 0.5], 1.0)
        10
    """
    if len(steps) != len(losses):
        raise ValueError(
            "Arguments `steps` and `losses` must have the same length. "
            f"Received: len(steps)={len(steps)}, len(losses)={len(losses)}"
        )
    for step, loss in zip(steps, losses, strict=True):
        if math.isfinite(loss) and loss <= target:
            return int(step)
    return None


@dataclass
class OptimizerRun:
    """One optimizer's training run.

    Attributes:
        optimizer: Its name in :data:`OPTIMIZER_NAMES`.
        learning_rate: The step size used.
        curve: One row per logged step: ``step, train_loss, grad_first, grad_last,
            grad_global, first_last_ratio`` (gradient norms of the first and last hidden
            layers and of all variables together, measured on that step's batch).
        steps_to_target: First logged step with ``train_loss <= target_loss`` (None: never).
        final_loss: Training-set loss after the last step.
        test_accuracy: Accuracy on the test set after the last step.
        diverged: Whether the loss or a gradient became NaN/inf (training stopped there).
    """

    optimizer: str
    learning_rate: float
    curve: pd.DataFrame
    steps_to_target: int | None
    final_loss: float
    test_accuracy: float
    diverged: bool


@dataclass
class OptimizerComparison:
    """The result of :func:`compare_optimizers`.

    Attributes:
        runs: One :class:`OptimizerRun` per optimizer, in the order requested.
        target_loss: The target used for ``steps_to_target``.
        steps: Training steps per optimizer (the shared budget).
        batch_size: Mini-batch size.
        seed: Seed of the initial weights and of the batch order.
        model_name: Name of the network trained.
        layers: The first and last hidden layers whose gradients are tracked.
    """

    runs: list[OptimizerRun]
    target_loss: float
    steps: int
    batch_size: int
    seed: int
    model_name: str
    layers: tuple[str, str] = ("", "")

    def table(self) -> pd.DataFrame:
        """One row per optimizer: ``optimizer, learning_rate, steps_to_target, final_loss,
        test_accuracy, first_last_ratio_start, first_last_ratio_end, diverged``.

        ``first_last_ratio_*`` is the first hidden layer's gradient norm divided by the last
        one's at the first and last logged step: how unevenly the layers are learning.
        """
        rows = []
        for run in self.runs:
            ratios = run.curve["first_last_ratio"].to_numpy(dtype=np.float64)
            ratios = ratios[np.isfinite(ratios)]
            rows.append({
                "optimizer": run.optimizer,
                "learning_rate": run.learning_rate,
                "steps_to_target": run.steps_to_target,
                "final_loss": run.final_loss,
                "test_accuracy": run.test_accuracy,
                "first_last_ratio_start": float(ratios[0]) if ratios.size else float("nan"),
                "first_last_ratio_end": float(ratios[-1]) if ratios.size else float("nan"),
                "diverged": run.diverged,
            })
        frame = pd.DataFrame(rows)
        frame["steps_to_target"] = frame["steps_to_target"].astype("Int64")
        return frame

    def curves(self) -> pd.DataFrame:
        """All runs' curves in long form, with an ``optimizer`` column."""
        return pd.concat([run.curve.assign(optimizer=run.optimizer) for run in self.runs],
                         ignore_index=True)

    def best(self) -> str:
        """The optimizer with the highest test accuracy (ties: fewest steps to target)."""
        t = self.table()
        steps = t["steps_to_target"].astype("float64").fillna(np.inf)
        order = sorted(range(len(t)), key=lambda i: (-t["test_accuracy"].iat[i], steps.iat[i]))
        return str(t["optimizer"].iat[order[0]])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (NaN/inf become None)."""
        def plain(v: Any) -> Any:
            if isinstance(v, (float, np.floating)):
                return float(v) if math.isfinite(v) else None
            if isinstance(v, (np.integer,)):
                return int(v)
            if isinstance(v, (np.bool_,)):
                return bool(v)
            if v is pd.NA:
                return None
            return v

        return {
            "target_loss": self.target_loss, "steps": self.steps, "batch_size": self.batch_size,
            "seed": self.seed, "model_name": self.model_name, "layers": list(self.layers),
            "table": [{k: plain(v) for k, v in r.items()}
                      for r in self.table().astype(object).to_dict("records")],
            "curves": [{k: plain(v) for k, v in r.items()}
                       for r in self.curves().to_dict("records")],
        }

    def save(self, path: str) -> str:
        """Write :meth:`to_dict` as JSON, atomically (never a half-written file)."""

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return str(path)

    def plot(self) -> Any:
        """The comparison figure (:func:`~gradhealth.course.plots.optimizer_plots.plot_optimizer_comparison`)."""

        return plot_optimizer_comparison(self)


def hard_network(seed: int = 0, input_dim: int = 64, num_classes: int = 10) -> keras.Model:
    """The default network of the comparison: :data:`HARD_NETWORK` as a ``deep_mlp``.

    Args:
        seed: Initializer seed.
        input_dim: Input features.
        num_classes: Output classes (logits).

    Returns:
        A built, uncompiled model with logit outputs.
    """

    return deep_mlp(input_dim=input_dim, num_classes=num_classes, seed=seed,
                    name=f"glorot_{HARD_NETWORK['activation']}_mlp", **HARD_NETWORK)


def _hidden_layer_names(model: keras.Model) -> list[str]:
    """Layers owning trainable variables, input to output, without the output layer."""
    layers = list(dict.fromkeys(v.path.rsplit("/", 1)[0] for v in model.trainable_variables))
    return layers[:-1] if len(layers) > 1 else layers


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    pred = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(pred, axis=-1) == np.asarray(y).reshape(-1)))


def compare_optimizers(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    model_builder: Callable[[], keras.Model] | None = None,
    optimizers: Sequence[str] = OPTIMIZER_NAMES,
    learning_rates: dict[str, float] | None = None,
    steps: int = 150,
    batch_size: int = 64,
    target_loss: float = DEFAULT_TARGET_LOSS,
    log_every: int = 10,
    loss: Any = None,
    seed: int = 0,
    jit_compile: bool | str = "auto",
) -> OptimizerComparison:
    """Train the same network with several optimizers, same seeds and budget, and compare.

    Every run starts from the same initial weights (built once, restored before each run),
    sees the same mini-batches in the same order (drawn once from ``seed``), and takes exactly
    ``steps`` updates with ``model.fit``. Before the first step and after every ``log_every``
    steps it records the loss on the whole training set and the gradient norms on a fixed probe
    batch (the first ``batch_size`` training examples). A run whose loss becomes NaN/inf stops
    there and is marked ``diverged``.

    Args:
        x_train: Training inputs.
        y_train: Integer class labels for ``x_train``.
        x_test: Test inputs for the final accuracy.
        y_test: Test labels.
        model_builder: A zero-argument callable returning a built model with logit outputs;
            default :func:`hard_network`. It is called once.
        optimizers: Names from :data:`OPTIMIZER_NAMES`.
        learning_rates: Per-optimizer overrides of :data:`DEFAULT_LEARNING_RATES`.
        steps: Updates per optimizer (the shared budget).
        batch_size: Examples per update.
        target_loss: Training loss that counts as "reached" for ``steps_to_target``.
        log_every: Record the curves every this many steps; must divide ``steps``.
        loss: Loss to minimize; default ``SparseCategoricalCrossentropy(from_logits=True)``.
        seed: Seed of the weights (through ``keras.utils.set_random_seed``) and batch order.
        jit_compile: Passed to ``model.compile`` (``"auto"``: XLA where Keras supports it).

    Returns:
        An :class:`OptimizerComparison`.

    Raises:
        ValueError: Unknown optimizer names, empty or duplicated list, bad sizes, ``log_every``
            not dividing ``steps``, a batch larger than the training set, mismatched data.
        TypeError: ``model_builder`` does not return a Keras model.

    Example:
        >>> x_tr, y_tr, x_te, y_te = gradhealth.data.load_digits_split()
        >>> result = compare_optimizers(x_tr, y_tr, x_te, y_te, steps=100)
        >>> result.table()[["optimizer", "steps_to_target", "test_accuracy"]]
        >>> result.plot()

    References:
        Kingma & Ba 2015 (Adam); Loshchilov & Hutter 2019 (AdamW); Chen et al. 2023 (Lion);
        Sutskever, Martens, Dahl & Hinton 2013 (momentum and Nesterov in deep learning).
    """
    xtr, ytr = check_batch_pair(x_train, y_train)
    xte, yte = check_batch_pair(x_test, y_test)
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    log_every = check_positive_int("log_every", log_every)
    target_loss = check_positive_float("target_loss", target_loss)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Argument `seed` must be a non-negative integer. Received: seed={seed!r}")
    if steps % log_every:
        raise ValueError(
            "Argument `log_every` must divide `steps` so every block has the same length. "
            f"Received: steps={steps}, log_every={log_every}"
        )
    if batch_size > len(xtr):
        raise ValueError(
            f"Argument `batch_size` must not exceed the {len(xtr)} training examples. "
            f"Received: batch_size={batch_size}"
        )
    names = list(optimizers) if not isinstance(optimizers, str) else [optimizers]
    unknown = [n for n in names if n not in OPTIMIZER_NAMES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"Argument `optimizers` must be a non-empty list of distinct names from "
            f"{list(OPTIMIZER_NAMES)}. Received: optimizers={optimizers!r}"
        )
    rates = dict(learning_rates or {})
    bad = sorted(set(rates) - set(names))
    if bad:
        raise ValueError(
            f"Argument `learning_rates` names optimizers that are not compared: {bad}. "
            f"Received: learning_rates={learning_rates!r}"
        )
    loss_fn = loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)

    keras.utils.set_random_seed(seed)
    model = model_builder() if model_builder is not None else hard_network(seed=seed)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model_builder` must return a keras.Model. "
            f"Received: a {type(model).__name__}"
        )
    initial = model.get_weights()
    batch_rng = np.random.default_rng(seed)
    order = np.concatenate([batch_rng.choice(len(xtr), size=batch_size, replace=False)
                            for _ in range(steps)])
    x_seq, y_seq = xtr[order], ytr[order]
    hidden = _hidden_layer_names(model)
    first, last = hidden[0], hidden[-1]

    probe_x, probe_y = xtr[:batch_size], ytr[:batch_size]

    # The training-set loss of every record of every run, one compiled function (TensorFlow:
    # one trace, then about 1 ms a call instead of 8-15 ms eagerly, 55 records in notebook 6).
    mean_loss = repeated(lambda x, y: keras.ops.mean(loss_fn(y, model(x, training=False))))
    x_all, y_all = keras.ops.convert_to_tensor(xtr), keras.ops.convert_to_tensor(ytr)
    runs: list[OptimizerRun] = []
    for name in names:
        model.set_weights(initial)
        optimizer = make_optimizer(name, rates.get(name))
        model.compile(optimizer=optimizer, loss=loss_fn, jit_compile=jit_compile,
                      steps_per_execution=_steps_per_execution(log_every))
        build_optimizer(model)
        probe = _Probe(loss_fn, lambda: mean_loss(x_all, y_all), probe_x, probe_y, log_every,
                       first, last)
        model.fit(x_seq, y_seq, batch_size=batch_size, epochs=1, steps_per_epoch=steps,
                  shuffle=False, verbose=0, callbacks=[probe])
        curve = pd.DataFrame(probe.rows, columns=CURVE_COLUMNS)
        diverged = probe.diverged
        runs.append(OptimizerRun(
            optimizer=name,
            learning_rate=float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            curve=curve,
            steps_to_target=steps_to_target(list(curve["step"]), list(curve["train_loss"]),
                                            target_loss),
            final_loss=float(curve["train_loss"].iat[-1]),
            test_accuracy=float("nan") if diverged else _accuracy(model, xte, yte),
            diverged=diverged,
        ))
    model.set_weights(initial)
    return OptimizerComparison(runs=runs, target_loss=target_loss, steps=steps,
                               batch_size=batch_size, seed=seed, model_name=model.name,
                               layers=(first, last))


def _steps_per_execution(log_every: int) -> int:
    """Steps per call of the compiled train function: a whole block between two records.

    One call runs ``log_every`` steps on the device, so ``fit`` returns to Python (and to the
    probe) once per block instead of once per step. Measured on the 2-core CI machine for
    notebook 6's comparison (TensorFlow, five optimizers, 100 steps): together with one ``fit``
    per run instead of one per block, 8.3 s instead of 9.7 s, with the same numbers. Keras'
    torch trainer runs one step per call only.
    """
    return 1 if keras.backend.backend() == "torch" else log_every


class _Probe(keras.callbacks.Callback):
    """Record the training-set loss and the probe batch's gradient norms between blocks.

    ``fit`` runs all steps in one epoch; the probe records before the first step and at the end
    of every block of ``log_every`` steps (``on_train_batch_end`` sees the weights after the
    block's last step; on JAX the running train state is written back to the variables first).
    """

    def __init__(self, loss_fn: Callable, dataset_loss: Callable[[], Any], probe_x: np.ndarray,
                 probe_y: np.ndarray, log_every: int, first: str, last: str) -> None:
        super().__init__()
        self.loss_fn, self.dataset_loss = loss_fn, dataset_loss
        self.probe_x, self.probe_y = probe_x, probe_y
        self.log_every, self.first, self.last = log_every, first, last
        self.rows: list[dict[str, float]] = []
        self.diverged = False

    def _record(self, step: int) -> None:

        loss = float(keras.ops.convert_to_numpy(self.dataset_loss()))
        row = {"step": step, "train_loss": loss, "grad_first": float("nan"),
               "grad_last": float("nan"), "grad_global": float("nan"),
               "first_last_ratio": float("nan")}
        if math.isfinite(loss):
            per_layer: dict[str, list[float]] = {}
            for path, g in layer_gradients(self.model, self.probe_x, self.probe_y,
                                           loss=self.loss_fn).items():
                per_layer.setdefault(path.rsplit("/", 1)[0], []).append(robust_norm(g))
            g_first = combine_norms(per_layer[self.first])
            g_last = combine_norms(per_layer[self.last])
            row.update(grad_first=g_first, grad_last=g_last,
                       grad_global=combine_norms([n for v in per_layer.values() for n in v]),
                       first_last_ratio=g_first / g_last if g_last > 0 else float("nan"))
        else:
            self.diverged = True
            self.model.stop_training = True
        self.rows.append(row)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.rows, self.diverged = [], False
        self._record(0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = batch + 1
        if self.diverged or step % self.log_every:
            return
        sync = getattr(self.model, "jax_state_sync", None)   # JAX: variables <- train state
        if sync is not None:
            sync()
        self._record(step)
