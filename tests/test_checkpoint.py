"""Save, load, checkpoint and resume with gradhealth's optimizer wrappers attached (every backend).

A run that checkpoints while the monitor is installed and resumes from that checkpoint must end
with the weights and optimizer state of an uninterrupted run without gradhealth; a model compiled
with ClippingOptimizer round-trips with its own config and state.
"""

from __future__ import annotations

import json
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest

import gradhealth as gh
from gradhealth.optim import ClippingOptimizer, GradientWrapperOptimizer

EPOCHS, STEPS = 3, 4
BATCH = 16


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 5)).astype("float32")
    y = x @ rng.normal(size=(5, 2)).astype("float32")
    return x, y


def make(optimizer_fn):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=optimizer_fn(), loss="mse")
    return model


def adam():
    return keras.optimizers.Adam(0.01)


def autoclip():
    return ClippingOptimizer(keras.optimizers.Adam(0.01), "autoclip", percentile=50,
                             history_size=16)


class EpochWeights(keras.callbacks.Callback):
    """Weights and optimizer variables at each epoch end."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        self.seen[epoch] = ([np.asarray(w) for w in self.model.weights],
                            int(self.model.optimizer.iterations))


def assert_same(a, b):
    """Bit-identical on TensorFlow and JAX; torch within float32 rounding."""
    for u, v in zip(a, b, strict=True):
        if keras.backend.backend() == "torch":
            np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(np.asarray(v), np.asarray(u))


def reference(optimizer_fn):
    """An uninterrupted run without gradhealth's monitor: weights per epoch."""
    x, y = data()
    model = make(optimizer_fn)
    probe = EpochWeights()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[probe])
    return model, probe.seen


def saved_optimizer_groups(path):
    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f) as h5:
        groups = []
        h5.visit(lambda name: groups.append(name) if name.startswith("optimizer") else None)
        config = json.loads(z.read("config.json"))
    return groups, config


def test_checkpoint_while_monitored_holds_the_users_optimizer(tmp_path):
    x, y = data()
    model = make(adam)
    path = tmp_path / "mid.keras"
    # Mid-epoch: after 6 of the 12 steps, the monitor installed.
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[gh.GradientHealthMonitor(),
                         keras.callbacks.ModelCheckpoint(path, save_freq=6)])
    groups, config = saved_optimizer_groups(path)
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert not any("inner_optimizer" in g for g in groups)
    n_vars = len([g for g in groups if g.startswith("optimizer/vars/")])
    assert n_vars == len(model.optimizer.variables)  # Adam's own, not the wrapper's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when it skips optimizer loading
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert not isinstance(loaded.optimizer, GradientWrapperOptimizer)
    # The save at step 12 of 12 (end) overwrote the mid-run file: compare with the live model.
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == EPOCHS * STEPS
    assert_same(model.optimizer.variables, loaded.optimizer.variables)
    assert_same(model.weights, loaded.weights)


@pytest.mark.parametrize("optimizer_fn", [adam, autoclip], ids=["adam", "clipping"])
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, optimizer_fn):
    ref_model, ref = reference(optimizer_fn)
    x, y = data()
    first = make(optimizer_fn)
    first.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[gh.GradientHealthMonitor(),
                         keras.callbacks.ModelCheckpoint(tmp_path / "e{epoch}.keras")])
    resumed = keras.saving.load_model(tmp_path / "e1.keras")
    assert type(resumed.optimizer) is type(ref_model.optimizer)
    assert int(resumed.optimizer.iterations) == ref[0][1] == STEPS
    assert_same(ref[0][0], resumed.weights)
    probe = EpochWeights()
    resumed.fit(x, y, batch_size=BATCH, epochs=EPOCHS, initial_epoch=1, shuffle=False, verbose=0,
                callbacks=[gh.GradientHealthMonitor(), probe])
    for epoch in range(1, EPOCHS):  # epoch by epoch, like the reference
        assert probe.seen[epoch][1] == ref[epoch][1]
        assert_same(ref[epoch][0], probe.seen[epoch][0])
    assert_same(ref_model.optimizer.variables, resumed.optimizer.variables)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("preempted")


def test_backup_and_restore_with_monitor_matches_uninterrupted_run(tmp_path):
    ref_model, _ = reference(adam)
    x, y = data()
    backup = tmp_path / "backup"
    model = make(adam)
    with pytest.raises(RuntimeError, match="preempted"):
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  callbacks=[gh.GradientHealthMonitor(), keras.callbacks.BackupAndRestore(backup),
                             Interrupt()])
    restarted = make(adam)  # a fresh process would build a fresh model
    monitor = gh.GradientHealthMonitor()
    restarted.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                  callbacks=[monitor, keras.callbacks.BackupAndRestore(backup)])
    assert len(monitor.history.step.unique()) == STEPS  # only the last epoch was run again
    assert int(restarted.optimizer.iterations) == int(ref_model.optimizer.iterations)
    assert_same(ref_model.optimizer.variables, restarted.optimizer.variables)
    assert_same(ref_model.weights, restarted.weights)


def test_clipping_optimizer_round_trips_with_config_and_state(tmp_path):
    x, y = data()
    model = make(autoclip)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "clip.keras")
    loaded = keras.saving.load_model(tmp_path / "clip.keras")
    opt, back = model.optimizer, loaded.optimizer
    assert type(back) is ClippingOptimizer
    assert back.get_config() == opt.get_config()
    assert isinstance(back.inner_optimizer, keras.optimizers.Adam)
    assert [v.shape for v in back.variables] == [v.shape for v in opt.variables]
    assert_same(opt.variables, back.variables)
    assert int(np.asarray(back.autoclip_count)) == STEPS
