"""Each private Keras attribute gradhealth reads still exists with the shape it expects.

If a Keras upgrade renames one, these tests fail loudly instead of the library silently taking
its fallback (see gradhealth.adapters.keras_compat).
"""

from __future__ import annotations

import keras
import numpy as np

from gradhealth.adapters import keras_compat


class Block(keras.layers.Layer):
    """A custom layer holding sub-layers as attributes (like keras-io's TransformerBlock)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.dense(x))


def test_every_private_attribute_is_listed():
    assert set(keras_compat.PRIVATE_ATTRIBUTES) == {
        "Layer._flatten_layers", "Optimizer._variables", "Model._jax_state",
        "Model._jax_state_synced", "TFOptimizer._distribution_strategy",
        "Model._compile_loss"}


def test_compile_loss_attribute_is_replaced_by_each_compile():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    assert hasattr(model, "_compile_loss") and model._compile_loss is None
    model.compile(loss="mse")
    first = keras_compat.compiled_loss_object(model)
    assert first is not None and first is model._compile_loss
    model.compile(loss="mse", loss_weights=[2.0])
    assert keras_compat.compiled_loss_object(model) is not first


def test_layer_flatten_layers_exists_and_walks_custom_layers():
    assert callable(getattr(keras.layers.Layer, "_flatten_layers", None))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Block(name="block")(inputs)))
    kinds = [type(layer).__name__ for layer in keras_compat.walk_layers(model)]
    assert "LayerNormalization" in kinds and "Block" in kinds
    assert kinds.count("Dense") == 2


def test_optimizer_variables_attribute_is_the_optimizers_own_list():
    opt = keras.optimizers.Adam()
    weights = [keras.Variable(np.zeros((3,), "float32"))]
    opt.build(weights)
    own = keras_compat.optimizer_own_variables(opt)
    assert isinstance(own, list)
    assert [id(v) for v in own] == [id(v) for v in opt.variables]


def test_jax_train_state_is_read_inside_fit_and_only_on_jax():
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            it = model.optimizer.iterations
            seen.append(keras_compat.jax_train_state_value(model, model.optimizer, it))

    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Probe()])
    if keras.backend.backend() == "jax":
        # The running state holds the iteration count the variable has not been given yet.
        assert hasattr(model, "_jax_state") and hasattr(model, "_jax_state_synced")
        assert [int(v) for v in seen] == [1, 2, 3, 4]
    else:
        assert seen == [None] * 4


def test_optimizer_distribution_strategy_is_the_strategy_it_was_created_under():
    strategy = keras_compat.optimizer_distribution_strategy(keras.optimizers.Adam())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert strategy is tf.distribute.get_strategy()  # the default strategy here
        one_device = tf.distribute.OneDeviceStrategy("CPU:0")
        with one_device.scope():
            created_inside = keras.optimizers.Adam()
        assert keras_compat.optimizer_distribution_strategy(created_inside) is one_device
    else:
        assert strategy is None
