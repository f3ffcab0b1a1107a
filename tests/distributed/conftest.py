"""Multi-device tests: each backend simulates two devices in its own pytest process.

``make test-distributed`` runs them with ``GRADHEALTH_DEVICES=2`` (and, for JAX,
``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which must be set before JAX starts).
Without ``GRADHEALTH_DEVICES`` a plain ``pytest tests`` does not collect them: the device layout
is fixed once per process, and the rest of the suite runs on one device.
"""

from __future__ import annotations

import os

import keras

DEVICES = int(os.environ.get("GRADHEALTH_DEVICES", "0"))

# Each engine's file runs on its own backend: tf.distribute on TensorFlow, keras.distribution
# on JAX (Keras has no torch distribution engine; see the README).
_FILES = {"tensorflow": "test_distributed_tf.py", "jax": "test_distributed_jax.py"}
collect_ignore_glob = [name for backend, name in _FILES.items()
                       if not DEVICES or backend != keras.backend.backend()]

if DEVICES and keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    # Logical CPU devices must be declared before TensorFlow initialises its runtime.
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
