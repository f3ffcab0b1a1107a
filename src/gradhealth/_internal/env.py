"""Quiet TensorFlow's import-time noise before any backend is imported.

TensorFlow prints oneDNN and CPU-feature lines when it is imported. Only the two variables together
silence it: ``TF_CPP_MIN_LOG_LEVEL=2`` hides the C++ INFO/WARNING lines and
``TF_ENABLE_ONEDNN_OPTS=0`` stops the oneDNN notice (which is printed before the log level applies).
A value the user already set is never overridden.
"""

from __future__ import annotations

import os

__all__ = ["QUIET_ENV", "quiet_tensorflow"]

QUIET_ENV: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def quiet_tensorflow(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the variables that silence TensorFlow, keeping any value already present.

    Args:
        environ: The mapping to update; ``os.environ`` when None.

    Returns:
        The variables this call set (empty when the user had set both).
    """
    env = os.environ if environ is None else environ
    changed = {}
    for key, value in QUIET_ENV.items():
        if key not in env:
            env[key] = value
            changed[key] = value
    return changed


quiet_tensorflow()
