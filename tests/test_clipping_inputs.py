"""ClippingOptimizer with every model and data form ``fit`` accepts (active backend).

Reference: the same one-step ``fit`` with the bare ``SGD(1.0)`` moves each weight by minus the
gradient Keras applies (sample weights, frozen layers, custom train steps, loss scaling all
included). The clipped run must move it by minus the NumPy rule of
:mod:`gradhealth.core.clipping` applied to that gradient.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradhealth.core import clipping as C
from gradhealth.optim import ClippingOptimizer

N = 32
ARGS = {"value": {"clip_value": 0.05}, "norm": {"max_norm": 0.1},
        "global_norm": {"max_norm": 0.1}, "agc": {"clip_factor": 0.01},
        "autoclip": {"percentile": 50}}


def numpy_rule(method, grads, weights):
    kwargs = ARGS[method]
    if method == "value":
        return C.clip_by_value(grads, **kwargs)
    if method == "norm":
        return C.clip_by_norm(grads, **kwargs)
    if method == "global_norm":
        return C.clip_by_global_norm(grads, **kwargs)[0]
    if method == "agc":
        return C.adaptive_clip(grads, weights, **kwargs)
    return list(grads)  # AutoClip's first step: the limit is this step's own norm


def rng_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, 6)).astype("float32"), rng.normal(size=(N, 1)).astype("float32")


def dense_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


# -- model and data forms: each returns (model, fit kwargs) ---------------------------------------
def multi_io():
    a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(8, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, {"p": keras.layers.Dense(1, name="p")(h),
                                           "q": keras.layers.Dense(2, name="q")(h)})
    rng = np.random.default_rng(1)
    x = {"a": rng.normal(size=(N, 6)).astype("float32"),
         "b": rng.normal(size=(N, 3)).astype("float32")}
    y = {"p": rng.normal(size=(N, 1)).astype("float32"),
         "q": rng.normal(size=(N, 2)).astype("float32")}
    return model, {"x": x, "y": y}, {"loss": {"p": "mse", "q": "mae"},
                                     "loss_weights": {"p": 1.0, "q": 0.5}}


def tf_data():
    x, y = rng_data()
    return dense_model(), {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(N)}, {}


def generator():
    x, y = rng_data()

    def batches():
        while True:
            yield x, y

    return dense_model(), {"x": batches(), "steps_per_epoch": 1}, {}


class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()
        self.x, self.y = rng_data()

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.x, self.y


def py_dataset():
    return dense_model(), {"x": Batches()}, {}


def sample_weight():
    x, y = rng_data()
    w = np.linspace(0.0, 2.0, N).astype("float32")
    return dense_model(), {"x": x, "y": y, "sample_weight": w}, {}


def frozen_layer():
    model = dense_model()
    model.layers[0].trainable = False
    x, y = rng_data()
    return model, {"x": x, "y": y}, {}


def embedding():
    rng = np.random.default_rng(2)
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(30, 5),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    x = rng.integers(0, 30, size=(N, 4)).astype("int32")  # some rows unused: sparse gradient
    return model, {"x": x, "y": rng.normal(size=(N, 1)).astype("float32")}, {}


class CustomStep(keras.Model):
    """A subclassed model whose train_step is written by hand, per backend (Keras' guide)."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.out(self.hidden(x, training=training), training=training)

    def train_step(self, *args, **kwargs):
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args, **kwargs)
        if backend == "torch":
            return self._torch_train_step(*args, **kwargs)
        return self._tf_train_step(*args, **kwargs)

    def _tf_train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}

    def _torch_train_step(self, data):
        x, y = data
        self.zero_grad()
        loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        loss.backward()
        variables = self.trainable_weights
        self.optimizer.apply([v.value.grad for v in variables], variables)
        return {"loss": loss}

    def _jax_train_step(self, state, data):
        import jax  # lazy: only on the JAX backend

        trainable, non_trainable, opt_vars, metrics_vars = state
        x, y = data

        def loss_fn(trainable):
            y_pred, new_non_trainable = self.stateless_call(trainable, non_trainable, x,
                                                            training=True)
            return self.compute_loss(y=y, y_pred=y_pred), new_non_trainable

        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
        return {"loss": loss}, (trainable, non_trainable, opt_vars, metrics_vars)


def custom_train_step():
    x, y = rng_data()
    model = CustomStep()
    model(x[:1])
    return model, {"x": x, "y": y}, {}


FORMS = {"multi_io": multi_io, "tf_data": tf_data, "generator": generator,
         "py_dataset": py_dataset, "sample_weight": sample_weight, "frozen_layer": frozen_layer,
         "embedding": embedding, "custom_train_step": custom_train_step,
         "mixed_float16": dense_model, "mixed_bfloat16": dense_model}

# Every method on the multi-input/multi-output model; elsewhere the global norm (the default)
# and one other rule in turn, so each rule meets several forms while the file stays quick.
OTHERS = ("value", "norm", "agc", "autoclip")
CASES = [("multi_io", m) for m in ARGS] + [
    case for i, form in enumerate(f for f in FORMS if f != "multi_io")
    for case in ((form, "global_norm"), (form, OTHERS[i % len(OTHERS)]))]


def one_step(form, optimizer):
    """Build the form's model, take one ``fit`` step, return (weights before, after)."""
    keras.utils.set_random_seed(0)
    if form.startswith("mixed_"):
        keras.mixed_precision.set_global_policy(form)
        try:
            model = dense_model()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        x, y = rng_data()
        fit_kwargs, compile_kwargs = {"x": x, "y": y}, {}
    else:
        model, fit_kwargs, compile_kwargs = FORMS[form]()
    compile_kwargs.setdefault("loss", "mse")
    model.compile(optimizer=optimizer, **compile_kwargs)
    if isinstance(fit_kwargs["x"], (np.ndarray, dict)):
        fit_kwargs["batch_size"] = N  # one step on the whole batch
    before = [keras.ops.convert_to_numpy(v.value).astype(np.float64)
              for v in model.trainable_variables]
    model.fit(epochs=1, shuffle=False, verbose=0, **fit_kwargs)
    after = [keras.ops.convert_to_numpy(v.value).astype(np.float64)
             for v in model.trainable_variables]
    return before, after, model


_PLAIN: dict[str, tuple] = {}


def plain_step(form):
    """The reference step with the bare optimizer, once per form."""
    if form not in _PLAIN:
        _PLAIN[form] = one_step(form, keras.optimizers.SGD(1.0))[:2]
    return _PLAIN[form]


@pytest.mark.parametrize(("form", "method"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_clipping_step_is_the_rule_applied_to_the_applied_gradient(form, method):
    before, plain = plain_step(form)
    grads = [b - a for b, a in zip(before, plain, strict=True)]  # SGD(1.0): step == gradient
    assert all(np.isfinite(g).all() for g in grads)
    assert any(np.abs(g).max() > 0 for g in grads)
    before_c, clipped, model = one_step(
        form, ClippingOptimizer(keras.optimizers.SGD(1.0), method, **ARGS[method]))
    for b, a in zip(before, before_c, strict=True):
        np.testing.assert_array_equal(a, b)  # same initial weights
    if form == "frozen_layer":
        assert len(model.trainable_variables) == 2  # the frozen layer's kernel and bias are out
    expected = numpy_rule(method, grads, before)
    rtol = 2e-2 if form.startswith("mixed_") else 2e-3  # float16/bfloat16 forward passes
    for b, a, e in zip(before, clipped, expected, strict=True):
        np.testing.assert_allclose(b - a, e, rtol=rtol, atol=1e-6)
    if method == "global_norm":
        norm = np.sqrt(sum(np.sum((b - a) ** 2) for b, a in zip(before, clipped, strict=True)))
        assert norm <= ARGS[method]["max_norm"] * (1 + 1e-4)
