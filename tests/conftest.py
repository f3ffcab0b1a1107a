"""Shared fixtures. KERAS_BACKEND is read once at import: each backend runs in its own pytest."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gradhealth as gh  # noqa: E402


@pytest.fixture(scope="session")
def backend() -> str:
    return keras.backend.backend()


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return gh.data.digits_batch(128)


@pytest.fixture()
def ce_loss() -> keras.losses.Loss:
    return gh.models.classification_loss()


@pytest.fixture(scope="session")
def six_features() -> tuple[np.ndarray, np.ndarray]:
    """64 examples of 6 standard-normal features with 3 classes: the monitor tests' data."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, size=64)
