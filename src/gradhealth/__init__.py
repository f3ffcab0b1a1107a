"""gradhealth: gradient health checkups, monitoring and remedies for Keras 3.

Works on every Keras 3 backend (TensorFlow, JAX, torch). Start with :func:`checkup`:

    >>> import gradhealth as gh
    >>> report = gh.checkup(model, x, y)
    >>> report.status, report.score, report.findings

Importing gradhealth first also silences TensorFlow's start-up messages
(see :mod:`gradhealth._env`).
"""

from gradhealth import _env  # noqa: F401, I001  (must run before keras imports TensorFlow)

from gradhealth import (  # noqa: E402
    activations,
    clipping,
    core,
    data,
    detect,
    exercises,
    experiments,
    initializers,
    models,
    optimizers,
    robust,
    treatment,
)
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
from gradhealth.initializers import ActivationVarianceScaling, lsuv_init  # noqa: E402
from gradhealth.optimizers import compare_optimizers  # noqa: E402
from gradhealth.robust import robust_mlp  # noqa: E402
from gradhealth.treatment import TreatmentPlan, TreatmentResult, prescribe, treat  # noqa: E402
from gradhealth.monitor import GradientHealthMonitor  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # gradhealth.course is imported on first use: `python -m gradhealth.course` must be able
    # to run it as __main__ without the package having imported it already.
    if name == "course":
        import importlib

        return importlib.import_module("gradhealth.course")
    raise AttributeError(f"module 'gradhealth' has no attribute {name!r}")

__all__ = [
    "ActivationVarianceScaling",
    "AutoClip",
    "ClippingOptimizer",
    "GradientHealthMonitor",
    "HealthReport",
    "Recommendation",
    "Thresholds",
    "TreatmentPlan",
    "TreatmentResult",
    "activations",
    "checkup",
    "clipping",
    "compare_optimizers",
    "core",
    "course",
    "data",
    "detect",
    "diagnose",
    "exercises",
    "experiments",
    "gradient_stats",
    "initializers",
    "layer_gradients",
    "lsuv_init",
    "models",
    "optimizers",
    "prescribe",
    "robust",
    "robust_mlp",
    "treat",
    "treatment",
]
