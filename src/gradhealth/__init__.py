"""gradhealth: gradient health checkups, monitoring and remedies for Keras 3.

Works on every Keras 3 backend (TensorFlow, JAX, torch). Start with :func:`checkup`:

    >>> import gradhealth as gh
    >>> report = gh.checkup(model, x, y)
    >>> report.status, report.score, report.findings

Importing gradhealth first also silences TensorFlow's start-up messages
(see :mod:`gradhealth._internal.env`). The course (notebook runner, experiments, exercises) is
:mod:`gradhealth.course`, imported on its own.
"""

from gradhealth._internal import env as _env  # noqa: F401, I001  (must run before keras imports TensorFlow)

from gradhealth import data, models  # noqa: E402
from gradhealth.callbacks import GradientHealthMonitor, GradientHealthWarning  # noqa: E402
from gradhealth.core.diagnosis import Recommendation  # noqa: E402
from gradhealth.core.thresholds import Thresholds  # noqa: E402
from gradhealth.diagnosis import (  # noqa: E402
    HealthReport,
    checkup,
    diagnose,
    gradient_stats,
    layer_gradients,
)
from gradhealth.init import ActivationVarianceScaling, lsuv_init  # noqa: E402
from gradhealth.models import robust_mlp  # noqa: E402
from gradhealth.optim import ClippingOptimizer, MonitoringOptimizer  # noqa: E402
from gradhealth.treatment import TreatmentPlan, TreatmentResult, prescribe, treat  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ActivationVarianceScaling",
    "ClippingOptimizer",
    "GradientHealthMonitor",
    "GradientHealthWarning",
    "HealthReport",
    "MonitoringOptimizer",
    "Recommendation",
    "Thresholds",
    "TreatmentPlan",
    "TreatmentResult",
    "checkup",
    "data",
    "diagnose",
    "gradient_stats",
    "layer_gradients",
    "lsuv_init",
    "models",
    "prescribe",
    "robust_mlp",
    "treat",
]
