"""TensorFlow import noise is silenced without overriding the user's settings."""

from __future__ import annotations

import os
import subprocess
import sys

from gradhealth._internal.env import QUIET_ENV, quiet_tensorflow


def test_sets_both_variables_when_absent():
    env: dict[str, str] = {}
    assert quiet_tensorflow(env) == QUIET_ENV
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def test_keeps_user_values():
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert quiet_tensorflow(env) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_importing_gradhealth_with_tensorflow_prints_nothing():
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env["KERAS_BACKEND"] = "tensorflow"
    code = "import gradhealth, tensorflow as tf; tf.constant(1.0) + 1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert "oneDNN" not in out.stderr and "cpu_feature_guard" not in out.stderr, out.stderr
