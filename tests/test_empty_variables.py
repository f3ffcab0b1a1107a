"""Variables with no entries (a shape with a 0) are read, not crashed on.

A max over an empty tensor has no value, and every backend raises on one (TensorFlow's
``reduce_max`` check, NumPy-style JAX, torch's ``aminmax`` and ``_foreach_norm(inf)``), so a
model holding such a variable made the checkup and the monitor fail with a backend traceback.
Their statistics are now zeros, as :func:`gradhealth.core.stats.tensor_stats` defines them, and
the diagnosis leaves them out (a layer of empty variables only has no gradient to read).
"""

from __future__ import annotations

import tempfile
import warnings

import keras
import numpy as np
import pytest

import gradhealth as gh
from gradhealth.adapters.fused import stats_kernels
from gradhealth.callbacks.monitor import GradientHealthMonitor, GradientHealthWarning
from gradhealth.ops import stats as ops_stats
from gradhealth.ops.stats import CORE_STATS, DEVICE_STATS, device_stats


class WithEmpty(keras.layers.Layer):
    """Adds the sum of a (0, 4) weight (zero) to its input: the weight gets an empty gradient."""

    def build(self, input_shape):
        self.empty = self.add_weight(shape=(0, 4), initializer="zeros", name="empty")

    def call(self, x):
        return x + keras.ops.sum(self.empty)


def model_with_empty():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), WithEmpty(),
                             keras.layers.Dense(3)])


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 5)).astype("float32"), rng.integers(0, 3, 32)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("stats", [CORE_STATS, DEVICE_STATS], ids=["core", "all"])
def test_device_stats_give_empty_variables_a_row_of_zeros(stats):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(3, 2)), np.zeros((0, 4)), rng.normal(size=(2,)), np.zeros((0,))]
    tensors = [keras.ops.convert_to_tensor(a.astype("float32")) for a in arrays]
    kernels = stats_kernels(ops_stats)
    table = keras.ops.convert_to_numpy(device_stats(tensors, tensors, kernels=kernels,
                                                    stats=stats))
    alone = keras.ops.convert_to_numpy(device_stats([tensors[0], tensors[2]],
                                                    [tensors[0], tensors[2]], kernels=kernels,
                                                    stats=stats))
    wanted = np.array([c in stats for c in DEVICE_STATS])
    np.testing.assert_array_equal(table[[0, 2]], alone)  # the others in their places, unchanged
    for row in (1, 3):
        assert (table[row, wanted] == 0).all() and np.isnan(table[row, ~wanted]).all()


def test_checkup_reads_a_model_with_an_empty_variable():
    model = model_with_empty()
    x, y = data()
    report = gh.checkup(model, x, y, loss=LOSS)
    assert report.status == "healthy"
    path = model.layers[1].empty.path
    assert path.rsplit("/", 1)[0] not in list(report.layers["layer"])
    assert len(report.layers) == 2
    row = report.variables.set_index("path").loc[path]
    assert row["size"] == 0 and row["grad_norm"] == 0 and row["nonfinite_count"] == 0


@pytest.mark.parametrize("settings", [{"every": 1}, {"every": 2}, {"every": 1, "log_dir": True}],
                         ids=["every=1", "every=2", "tensorboard"])
def test_monitor_fits_a_model_with_an_empty_variable(settings):
    model = model_with_empty()
    model.compile(optimizer="adam", loss=LOSS)
    x, y = data()
    settings = dict(settings)
    if settings.pop("log_dir", False):
        settings["log_dir"] = tempfile.mkdtemp()
    monitor = GradientHealthMonitor(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientHealthWarning)  # no alert
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    history = monitor.history
    empty = history[history.path == model.layers[1].empty.path]
    assert sorted(empty.step) == list(range(0, 4, settings["every"]))
    assert (empty.grad_norm == 0).all() and (empty.nonfinite_count == 0).all()
    assert monitor.skipped_steps == []
