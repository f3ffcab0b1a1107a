"""The monitor works with every data and model form ``fit`` takes (issue 10's list).

Each form trains one epoch with the monitor at ``every=1``; where the first batch's gradient is
the plain one, step 0 is compared with :func:`gradhealth.gradient_stats` (the float64
reference); otherwise the property that identifies the form is asserted.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradhealth.callbacks.monitor import GradientHealthMonitor
from gradhealth.diagnosis import gradient_stats

BATCH, N = 16, 64
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, 6)).astype("float32")
Y = RNG.integers(0, 3, size=N)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSS)
    return model


def fit(model, data, **kwargs):
    monitor = GradientHealthMonitor(every=1, stats="all")
    model.fit(data, verbose=0, callbacks=[monitor], **kwargs)
    return monitor.history


def assert_first_step_matches(history, reference, rtol=1e-4):
    first = history[history.step == 0].reset_index(drop=True)
    assert list(first.path) == list(reference.path)
    for col in ("grad_norm", "grad_max_abs", "grad_std", "weight_norm", "zero_fraction"):
        np.testing.assert_allclose(first[col].to_numpy(np.float64),
                                   reference[col].to_numpy(np.float64), rtol=rtol, err_msg=col)


class Batches(keras.utils.PyDataset):
    def __len__(self):
        return N // BATCH

    def __getitem__(self, i):
        return X[i * BATCH:(i + 1) * BATCH], Y[i * BATCH:(i + 1) * BATCH]


def generator():
    while True:
        for i in range(N // BATCH):
            yield X[i * BATCH:(i + 1) * BATCH], Y[i * BATCH:(i + 1) * BATCH]


def tf_dataset():
    import tensorflow as tf  # tf.data feeds fit on every backend

    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)


@pytest.mark.parametrize("form", ["arrays", "generator", "pydataset", "tf.data"])
def test_input_pipelines_give_the_reference_statistics(form):
    model = mlp()
    reference = gradient_stats(model, X[:BATCH], Y[:BATCH])
    if form == "arrays":
        history = fit(model, X, y=Y, batch_size=BATCH, shuffle=False)
    elif form == "generator":
        history = fit(model, generator(), steps_per_epoch=N // BATCH)
    elif form == "pydataset":
        history = fit(model, Batches(), shuffle=False)
    else:
        history = fit(model, tf_dataset())
    assert sorted(history.step.unique()) == list(range(N // BATCH))
    assert_first_step_matches(history, reference)


def test_sample_weight_scales_the_gradient():
    plain = fit(mlp(), X, y=Y, batch_size=BATCH, shuffle=False)
    weighted = fit(mlp(), X, y=Y, batch_size=BATCH, shuffle=False,
                   sample_weight=np.full(N, 2.0, "float32"))
    a, b = plain[plain.step == 0], weighted[weighted.step == 0]
    np.testing.assert_allclose(b.grad_norm.to_numpy(), 2 * a.grad_norm.to_numpy(), rtol=1e-5)


def test_multi_input_multi_output_model():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Dense(8, activation="relu", name="trunk")(
        keras.layers.Concatenate()([a, b]))
    out1 = keras.layers.Dense(3, name="cls")(h)
    out2 = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model([a, b], [out1, out2])
    model.compile(optimizer="adam", loss=[LOSS, "mse"], loss_weights=[1.0, 0.5])
    xb = RNG.normal(size=(N, 4)).astype("float32")
    history = fit(model, [X, xb], y=[Y, xb[:, :1]], batch_size=BATCH)
    assert set(history.layer) == {"trunk", "cls", "reg"}
    assert len(history) == (N // BATCH) * len(model.trainable_variables)
    assert (history.grad_norm > 0).all() and history.global_norm.notna().all()


def test_frozen_layer_is_not_monitored_and_custom_train_step():
    class Custom(keras.Model):
        def train_step(self, *args):  # a custom step that changes the data, then trains
            *state, (x, y) = args  # JAX's train_step also takes the train state first
            return super().train_step(*state, (x * 1.0, y))

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    frozen = keras.layers.Dense(8, activation="tanh", name="frozen")
    frozen.trainable = False
    model = Custom(inputs, keras.layers.Dense(3, name="head")(frozen(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSS)
    reference = gradient_stats(model, X[:BATCH], Y[:BATCH])
    history = fit(model, X, y=Y, batch_size=BATCH, shuffle=False)
    assert set(history.layer) == {"head"}
    assert_first_step_matches(history, reference)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_statistics_are_float32_and_unscaled(policy):
    reference = fit(mlp(), X, y=Y, batch_size=BATCH, shuffle=False)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = mlp()
        history = fit(model, X, y=Y, batch_size=BATCH, shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    a, b = reference[reference.step == 0], history[history.step == 0]
    assert (b.grad_norm > 0).all() and np.isfinite(b.grad_norm).all()
    # unscaled: within half-precision rounding of the float32 run (a loss scale of 2**15
    # left in would be off by 32768x)
    tol = 2e-2 if policy == "mixed_bfloat16" else 5e-3
    np.testing.assert_allclose(b.grad_norm.to_numpy(), a.grad_norm.to_numpy(), rtol=tol)


def test_embedding_gradients_are_the_dense_ones():
    """TensorFlow hands Embedding gradients over as IndexedSlices; statistics are the dense
    gradient's (zero rows for unused tokens included)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 4),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSS)
    tokens = RNG.integers(0, 50, size=(N, 5)).astype("int32")
    reference = gradient_stats(model, tokens[:BATCH], Y[:BATCH])
    history = fit(model, tokens, y=Y, batch_size=BATCH, shuffle=False)
    assert_first_step_matches(history, reference)
    emb = history[(history.step == 0) & (history.variable == "embeddings")]
    unused_rows = 50 - len(np.unique(tokens[:BATCH]))  # rows no token of the batch touched
    assert float(emb.zero_fraction.iloc[0]) == pytest.approx(unused_rows / 50)
