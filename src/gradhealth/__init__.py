"""gradhealth: gradient health checkups, monitoring and remedies for Keras 3.

Works on every Keras 3 backend (TensorFlow, JAX, torch). Start with :func:`checkup`:

    >>> import gradhealth as gh
    >>> report = gh.checkup(model, x, y)
    >>> report.status, report.score, report.findings

Importing gradhealth first also silences TensorFlow's start-up messages
(see :mod:`gradhealth._env`).
"""

from gradhealth import _env  # noqa: F401, I001  (must run before keras imports TensorFlow)

from gradhealth import clipping, core, course, data, detect, exercises, models  # noqa: E402
from gradhealth.checkup import (  # noqa: E402
    HealthReport,
    checkup,
    diagnose,
    gradient_stats,
    layer_gradients,
)
from gradhealth.clipping import AutoClip, ClippingOptimizer  # noqa: E402
from gradhealth.core.diagnosis import Recommendation  # noqa: E402
from gradhealth.core.thresholds import Thresholds  # noqa: E402
from gradhealth.monitor import GradientHealthMonitor  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AutoClip",
    "ClippingOptimizer",
    "GradientHealthMonitor",
    "HealthReport",
    "Recommendation",
    "Thresholds",
    "checkup",
    "clipping",
    "core",
    "course",
    "data",
    "detect",
    "diagnose",
    "exercises",
    "gradient_stats",
    "layer_gradients",
    "models",
]
