"""checkup under multi-device engines gives the single-device numbers.

Devices are simulated on the CPU, which must be configured before the backend initializes, so
each case runs this file as a script in its own process (``python this_file.py BACKEND``):

- TensorFlow: two logical CPU devices (``tf.config.set_logical_device_configuration``), a model
  built and checked up inside ``tf.distribute.MirroredStrategy(...).scope()``;
- JAX: ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and
  ``keras.distribution.DataParallel`` over both devices.

Each compares ``gradient_stats`` with the same model (same weights) on one device, checks the
model's state is unchanged, and prints ``OK``. They start a backend each, so they are marked
slow (run in the TensorFlow suite, whatever backend the parent test process uses).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COLUMNS = ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_std", "zero_fraction",
           "nonfinite_count", "weight_norm", "dead_unit_fraction")


def _run(backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_force_host_platform_device_count=2").strip()
    proc = subprocess.run([sys.executable, __file__, backend], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_checkup_under_tf_mirrored_strategy_equals_one_device():
    out = _run("tensorflow")
    assert "replicas=2" in out and out.strip().endswith("OK")


@pytest.mark.slow
def test_checkup_under_jax_data_parallel_equals_one_device():
    out = _run("jax")
    assert "devices=2" in out and out.strip().endswith("OK")


def _build(seed: int):
    import keras  # lazy: the backend is configured by the worker before Keras is imported

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu", name="h1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dense(16, activation="tanh", name="h2")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _compare(single, multi, x, y) -> None:
    import keras  # lazy: see _build
    import numpy as np  # lazy: see _build

    import gradhealth as gh  # lazy: see _build

    multi.set_weights(single.get_weights())
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in multi.variables]
    want = gh.gradient_stats(single, x, y)
    got = gh.gradient_stats(multi, x, y)
    report = gh.checkup(multi, x, y)
    for col in COLUMNS:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-5, atol=1e-7, err_msg=col)
    grads_single = gh.layer_gradients(single, x, y)
    grads_multi = gh.layer_gradients(multi, x, y)
    for path, g in grads_single.items():
        np.testing.assert_allclose(grads_multi[path], g, rtol=1e-5, atol=1e-7, err_msg=path)
    assert report.layers["grad_norm"].notna().all()
    for b, v in zip(before, multi.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), b)


def _worker(backend: str) -> None:
    import numpy as np  # lazy: see _build

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.integers(0, 3, size=32)
    if backend == "tensorflow":
        import tensorflow as tf  # lazy: logical devices must be set before TF initializes

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        print(f"replicas={strategy.num_replicas_in_sync}")
        single = _build(1)
        with strategy.scope():
            multi = _build(2)
            assert type(multi.trainable_variables[0].value).__name__ == "MirroredVariable"
            _compare(single, multi, x, y)
    else:
        import jax  # lazy: XLA_FLAGS must be set before JAX initializes
        import keras  # lazy: see _build

        devices = jax.devices()
        print(f"devices={len(devices)}")
        single = _build(1)
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        multi = _build(2)
        assert len(multi.trainable_variables[0].value.sharding.device_set) == 2
        _compare(single, multi, x, y)
    print("OK")


if __name__ == "__main__":
    _worker(sys.argv[1])
