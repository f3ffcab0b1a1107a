"""gradhealth: gradient health checkups, monitoring and remedies for Keras 3.

Works on every Keras 3 backend (TensorFlow, JAX, torch). Start with :func:`checkup`:

    >>> import gradhealth as gh
    >>> report = gh.checkup(model, x, y)
    >>> report.status, report.score, report.findings
"""

from gradhealth import _env  # noqa: F401  (quiets TensorFlow before keras imports it)

from gradhealth import core, data, models  # noqa: E402
from gradhealth.checkup import (  # noqa: E402
    HealthReport,
    checkup,
    diagnose,
    gradient_stats,
    layer_gradients,
)
from gradhealth.core.diagnosis import Recommendation  # noqa: E402
from gradhealth.core.thresholds import Thresholds  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "HealthReport",
    "Recommendation",
    "Thresholds",
    "checkup",
    "core",
    "data",
    "diagnose",
    "gradient_stats",
    "layer_gradients",
    "models",
]
