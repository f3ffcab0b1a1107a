"""Activation functions: a catalog of measured properties, gradient flow, recommendations.

Every function in the catalog is Keras' own (``keras.activations``); its derivative comes from
the active backend's autodiff (:mod:`gradhealth.adapters.autodiff`), and the tests check it
against the closed form to 1e-6. Every property in :func:`catalog` is *measured* from those two
functions on a grid or under a standard normal input, including the relative compute cost.
:func:`recommend` ranks activations by stated rules applied to those measured properties, so
each rank comes with the reasons that produced it.

References:
    Glorot, Bordes & Bengio (2011), "Deep Sparse Rectifier Neural Networks" (ReLU).
    Maas, Hannun & Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic Models"
    (leaky ReLU).
    Clevert, Unterthiner & Hochreiter (2016), "Fast and Accurate Deep Network Learning by
    Exponential Linear Units" (ELU).
    Klambauer, Unterthiner, Mayr & Hochreiter (2017), "Self-Normalizing Neural Networks" (SELU).
    Hendrycks & Gimpel (2016), "Gaussian Error Linear Units" (GELU).
    Ramachandran, Zoph & Le (2017), "Searching for Activation Functions" (swish / SiLU).
    Misra (2019), "Mish: A Self Regularized Non-Monotonic Activation Function".
    Lu, Shin, Su & Karniadakis (2019), "Dying ReLU and Initialization".
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp" (zero-centred outputs).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradhealth._internal.validation import check_choice, check_positive_int
from gradhealth.adapters import autodiff
from gradhealth.core.knowledge import ACTIVATION_FACTS, matched_initializer
from gradhealth.core.knowledge import ALIASES as KNOWLEDGE_ALIASES
from gradhealth.core.thresholds import Thresholds

__all__ = ["ACTIVATIONS", "ALIASES", "BOUND_SLOPE", "CATALOG_NAMES", "COST_ELEMENTS",
           "COST_REPEATS", "COST_WEIGHT", "CURVATURE_JUMP", "DEAD_RISK_HIGH", "DEEP_NETWORK",
           "DERIVATIVE_JUMP", "GRID_LIMIT", "GRID_STEP", "NORMALIZATION_CHOICES", "PRIORITIES",
           "RANGE_PROBE", "RULES", "SATURATION_DERIVATIVE", "SELF_NORMALIZING_TOL", "TASKS",
           "ZERO_CENTRED_TOL", "ActivationInfo", "Rule", "available_activations", "catalog",
           "derivative", "evaluate", "get_activation", "measure_cost", "output_activation",
           "properties", "recommend", "resolve_name"]


@dataclass(frozen=True)
class ActivationInfo:
    """One catalog entry.

    Attributes:
        name: The catalog name (Keras' name).
        fn: The Keras activation function.
        reference: The paper that introduced or analysed it.
    """

    name: str
    fn: Callable[[Any], Any]
    reference: str


#: The catalog's activations, in teaching order (saturating, rectifiers, exponential, smooth).
CATALOG_NAMES: tuple[str, ...] = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu",
                                  "silu", "mish", "softplus")

#: The catalog; each entry's reference comes from :mod:`gradhealth.core.knowledge`.
ACTIVATIONS: dict[str, ActivationInfo] = {
    name: ActivationInfo(name, getattr(keras.activations, name), ACTIVATION_FACTS[name].source)
    for name in CATALOG_NAMES
}
#: Other accepted spellings.
ALIASES: dict[str, str] = {k: v for k, v in KNOWLEDGE_ALIASES.items() if v in ACTIVATIONS}

#: Grid on which shape properties are measured: [-10, 10] in steps of 1e-3. Wide enough for
#: every saturation threshold below (the farthest, SELU's, is at x = -5.2); fine enough that a
#: smooth derivative changes by < 1e-3 * max|f''| (< 2e-3 for every catalog entry) per step, far
#: below the jump thresholds.
GRID_LIMIT: float = 10.0
GRID_STEP: float = 1e-3
#: A unit whose local derivative is below this passes < 1% of the gradient it receives: 10 such
#: layers in a row shrink it by 1e-20. Where |f'(x)| stays below it, f is "saturated".
SATURATION_DERIVATIVE: float = 0.01
#: A first-derivative change larger than this between neighbouring grid points is a kink (f is
#: only C0 there); smooth functions change by < 2e-3 per step on the grid above.
DERIVATIVE_JUMP: float = 0.05
#: A jump in the finite-difference second derivative larger than this marks an f that is C1 but
#: not C2 (ELU at 0 jumps by 1); float32 noise in f' / GRID_STEP is about 1e-4.
CURVATURE_JUMP: float = 0.05
#: Points where |f(x)| is probed to decide whether the output range is bounded: f is unbounded
#: on a side if it still moves by more than BOUND_SLOPE per unit of x between RANGE_PROBE and
#: 2 * RANGE_PROBE.
RANGE_PROBE: float = 1e3
BOUND_SLOPE: float = 1e-3
#: ``|E[f(z)]| <= ZERO_CENTRED_TOL * sqrt(E[f(z)^2])`` for z ~ N(0, 1) counts as zero-centred:
#: the mean is under 10% of the output's RMS, so the next layer's gradient is not dominated by
#: a common sign (LeCun et al. 1998, section 4.3).
ZERO_CENTRED_TOL: float = 0.1
#: Fraction of a standard normal input with an exactly-zero derivative at or above which the
#: dead-unit risk is "high" (ReLU: 0.5). A unit whose every input lands there never recovers.
DEAD_RISK_HIGH: float = 0.25
#: Tolerance for "self-normalizing": under N(0, 1) input the output has mean 0 and second
#: moment 1 within this tolerance, i.e. (0, 1) is a fixed point of the variance map with LeCun
#: initialization (Klambauer et al. 2017, SELU's defining property).
SELF_NORMALIZING_TOL: float = 0.05
#: Elements and repeats of the compute-cost measurement: 2**20 float32 elements (4 MiB) take
#: about a millisecond, long enough to time and short enough to keep the catalog under a second.
COST_ELEMENTS: int = 2**20
COST_REPEATS: int = 7


def available_activations() -> list[str]:
    """Names of the activations in the catalog (aliases: ``swish`` = ``silu``)."""
    return list(ACTIVATIONS)


def resolve_name(name: Any, argument: str = "activation") -> str:
    """Canonical catalog name of ``name`` (or an alias).

    Raises:
        ValueError: Unknown name; the message lists the valid ones.
    """
    key = name.lower() if isinstance(name, str) else name
    key = ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}. Valid names are {available_activations()} "
            f"(aliases: {sorted(ALIASES)}). Received: {argument}={name!r}"
        )
    return key


def get_activation(name: str) -> Callable[[Any], Any]:
    """The Keras activation function of a catalog name.

    Args:
        name: A catalog name or alias.

    Returns:
        The ``keras.activations`` function.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
    """
    return ACTIVATIONS[resolve_name(name)].fn


def evaluate(name: str, x: Any) -> np.ndarray:
    """``f(x)`` computed by Keras on the active backend in float64.

    Args:
        name: Catalog name or alias.
        x: Points, any shape.

    Returns:
        A float64 array of the shape of ``x``.
    """
    return autodiff.evaluate(get_activation(name), np.asarray(x, dtype=np.float64))


def derivative(name: str, x: Any) -> np.ndarray:
    """``f'(x)`` by the active backend's reverse-mode autodiff, in float64.

    Args:
        name: Catalog name or alias.
        x: Points, any shape.

    Returns:
        A float64 array of the shape of ``x``.

    Example:
        >>> derivative("sigmoid", [0.0])
        array([0.25])
    """
    return autodiff.derivative(get_activation(name), np.asarray(x, dtype=np.float64))


def _grid() -> np.ndarray:
    n = int(round(2 * GRID_LIMIT / GRID_STEP)) + 1
    return np.linspace(-GRID_LIMIT, GRID_LIMIT, n)


def _contiguous_end(mask: np.ndarray, from_left: bool) -> int:
    """Number of leading (or trailing) True entries of ``mask``."""
    seq = mask if from_left else mask[::-1]
    if seq.size == 0 or not seq[0]:
        return 0
    stops = np.flatnonzero(~seq)
    return int(stops[0]) if stops.size else int(seq.size)


def _max_where(x: np.ndarray, d: np.ndarray) -> tuple[float, float, str]:
    peak = float(np.max(d))
    near = np.flatnonzero(d >= peak - 1e-3 * max(abs(peak), 1.0))
    lo, hi = float(x[near[0]]), float(x[near[-1]])
    if near[-1] == x.size - 1:
        text = f"x >= {lo:.2f}" if lo > x[0] else "everywhere"
    elif hi - lo <= 10 * GRID_STEP:
        text = f"x = {(lo + hi) / 2:.2f}"
    else:
        text = f"{lo:.2f} <= x <= {hi:.2f}"
    return peak, float(x[int(np.argmax(d))]), text


def _range_side(name: str, sign: float) -> float | None:
    """The bound of f on one side, or None when f grows without bound there."""
    far = evaluate(name, [sign * RANGE_PROBE, sign * 2 * RANGE_PROBE])
    if abs(far[1] - far[0]) > BOUND_SLOPE * RANGE_PROBE:
        return None
    return float(far[1])


def _fmt(v: float) -> str:
    return "∞" if v == math.inf else "-∞" if v == -math.inf else f"{v:.3f}"


@functools.cache
def _shape_properties(name: str, backend: str) -> dict[str, Any]:
    x = _grid()
    f = evaluate(name, x)
    d = derivative(name, x)
    peak, argmax, where = _max_where(x, d)
    low = _range_side(name, -1.0)
    high = _range_side(name, 1.0)
    lo = -math.inf if low is None else min(low, float(f.min()))
    hi = math.inf if high is None else max(high, float(f.max()))
    flat = np.abs(d) < SATURATION_DERIVATIVE
    n_left, n_right = _contiguous_end(flat, True), _contiguous_end(flat, False)
    left = float(x[n_left]) if n_left else None  # first x where f' leaves the flat left tail
    right = float(x[-n_right - 1]) if n_right else None
    parts = ([f"x < {left:.2f}"] if left is not None else []) + (
        [f"x > {right:.2f}"] if right is not None else [])
    jumps = np.abs(np.diff(d))
    second = np.diff(d) / GRID_STEP
    if jumps.max() > DERIVATIVE_JUMP:
        kink = float(x[int(np.argmax(jumps))])
        smooth = f"C0 (kink at x = {kink:.2f})"
    elif np.abs(np.diff(second)).max() > CURVATURE_JUMP:
        smooth = "C1 (curvature jumps)"
    else:
        smooth = "smooth (C∞)"
    # Gaussian statistics, z ~ N(0, 1): a Riemann sum of the density on the fine grid. The
    # kinks of ReLU-like functions sit on grid points, so this is accurate to ~1e-7 where
    # Gauss-Hermite quadrature would be off by 1e-3 (it assumes a smooth integrand), and the
    # mass beyond |z| = 10 is 1e-23.
    density = np.exp(-x**2 / 2) / math.sqrt(2 * math.pi) * GRID_STEP
    mean = float(density @ f)
    second_moment = float(density @ f**2)
    gain = float(density @ d**2)
    # Exactly-zero derivative mass under N(0, 1).
    zero_mass = float(density[d == 0].sum())
    zero_centred = abs(mean) <= ZERO_CENTRED_TOL * math.sqrt(second_moment)
    self_norm = abs(mean) <= SELF_NORMALIZING_TOL and abs(second_moment - 1) <= SELF_NORMALIZING_TOL
    rectifier = high is None and abs(float(d[-1]) - 1.0) < SATURATION_DERIVATIVE
    return {
        "activation": name,
        "output_min": lo,
        "output_max": hi,
        "output_range": f"[{_fmt(lo)}, {_fmt(hi)}]",
        "derivative_at_0": float(derivative(name, [0.0])[0]),
        "max_derivative": peak,
        "argmax_derivative": argmax,
        "max_derivative_at": where,
        "zero_centred": bool(zero_centred),
        "mean_output": mean,
        "second_moment": second_moment,
        "gradient_gain": gain,
        "saturating": bool(parts),
        "saturates_where": " and ".join(parts) if parts else "nowhere",
        "saturates_left": left is not None,
        "saturates_right": right is not None,
        "zero_gradient_fraction": zero_mass,
        "dead_unit_risk": ("high" if zero_mass >= DEAD_RISK_HIGH else
                           "low" if zero_mass > 0 else "none"),
        "smoothness": smooth,
        "self_normalizing": bool(self_norm),
        "rectifier_like": bool(rectifier),
        "pairs_with": matched_initializer(name),
    }


def measure_cost(names: Sequence[str] | None = None, elements: int = COST_ELEMENTS,
                 repeats: int = COST_REPEATS) -> pd.Series:
    """Measured forward compute time of each activation relative to ReLU on this machine.

    Each function runs ``repeats`` times on the same float32 tensor of ``elements`` entries on
    the active backend (eagerly), after one warm-up call, in interleaved rounds; each function's
    fastest run is kept (the least disturbed by other processes) and divided by ReLU's.

    Args:
        names: Catalog names (default: all).
        elements: Tensor size.
        repeats: Timed runs per function.

    Returns:
        A Series indexed by activation name (ReLU = 1.0).
    """
    check_positive_int("elements", elements)
    check_positive_int("repeats", repeats)
    names = [resolve_name(n) for n in (names or available_activations())]
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.standard_normal(elements).astype(np.float32) * 3)

    timed = list(dict.fromkeys(["relu", *names]))
    for name in timed:  # warm-up: first calls pay for kernel selection and allocation
        keras.ops.convert_to_numpy(ACTIVATIONS[name].fn(x))
    best = dict.fromkeys(timed, math.inf)
    for _ in range(repeats):  # interleaved rounds, so a busy moment affects every function
        for name in timed:
            start = time.perf_counter()
            keras.ops.convert_to_numpy(ACTIVATIONS[name].fn(x))  # forces async backends
            best[name] = min(best[name], time.perf_counter() - start)
    return pd.Series({n: best[n] / best["relu"] for n in names}, name="relative_cost")


def properties(name: str) -> dict[str, Any]:
    """The measured shape properties of one activation (everything in :func:`catalog` but cost).

    Args:
        name: Catalog name or alias.

    Returns:
        A dict; see :func:`catalog` for the keys.
    """
    return dict(_shape_properties(resolve_name(name), keras.backend.backend()))


def catalog(names: Sequence[str] | None = None, cost: bool = True) -> pd.DataFrame:
    """Measured properties of each activation, one row per activation.

    Columns: ``output_min, output_max, output_range`` (bounds found on a grid and at +-1e3),
    ``derivative_at_0``, ``max_derivative``, ``argmax_derivative``, ``max_derivative_at``,
    ``zero_centred`` (with ``mean_output``, ``second_moment``: E[f(z)], E[f(z)^2] for
    z ~ N(0, 1)), ``gradient_gain`` (E[f'(z)^2]), ``saturating``, ``saturates_where``
    (|f'| < :data:`SATURATION_DERIVATIVE`), ``zero_gradient_fraction``, ``dead_unit_risk``,
    ``smoothness``, ``self_normalizing``, ``rectifier_like``, ``pairs_with`` and, when ``cost``,
    ``relative_cost`` (measured time relative to ReLU; varies a little between runs).

    Args:
        names: Catalog names or aliases (default: all).
        cost: Also measure the compute cost (about a second).

    Returns:
        A DataFrame indexed by activation name.

    Raises:
        ValueError: Unknown name.
    """
    names = [resolve_name(n) for n in (names or available_activations())]
    table = pd.DataFrame([properties(n) for n in names]).set_index("activation")
    if cost:
        table["relative_cost"] = measure_cost(names)
    return table


# --------------------------------------------------------------------------------------------
# Recommendations
# --------------------------------------------------------------------------------------------

TASKS: tuple[str, ...] = ("multiclass", "binary", "regression")
NORMALIZATION_CHOICES: tuple[str | None, ...] = (None, "batch", "layer")
PRIORITIES: tuple[str, ...] = ("balanced", "accuracy", "speed")
#: Depth from which a network counts as "deep" for the saturation and
#: self-normalization rules: 10 sigmoid layers already lose 1e-6 of the gradient (notebook 1).
DEEP_NETWORK: int = 10
#: Weight of log2(relative cost) in the score, per priority: a 2x slower function costs 0.25
#: points when balanced (less than any gradient-flow rule), 1 point when speed is the priority.
COST_WEIGHT: dict[str, float] = {"balanced": 0.25, "accuracy": 0.0, "speed": 1.0}


@dataclass(frozen=True)
class Rule:
    """A stated recommendation rule: the statement and the measured properties it reads."""

    name: str
    statement: str


RULES: tuple[Rule, ...] = (
    Rule("vanishing_derivative",
         "max f' < 1 and no skip connections: the gradient can shrink by max_f'^depth; below the "
         "vanishing threshold (1e-3 of the top layer) costs up to 3 points, 1 per decade."),
    Rule("two_sided_saturation",
         "saturates on both sides, deep network, no normalization: -1 (pre-activations drift "
         "into the flat tails; Glorot & Bengio 2010)."),
    Rule("gradient_preserving",
         "rectifier family in the knowledge table: +1 (slope 1 on the active side; with the "
         "paired He initializer the gradient's second moment is kept layer after layer, so it "
         "does not shrink with depth; He et al. 2015 trained 30-layer ReLU networks this way, "
         "and rectifiers beat sigmoid/tanh already in shallow nets: Glorot, Bordes & Bengio "
         "2011)."),
    Rule("dead_units",
         "exactly-zero derivative on >= 25% of a Gaussian input: -0.25 (units can die; "
         "Lu et al. 2019), a risk, not a certainty: with He initialization most units stay "
         "alive (He et al. 2015), so it weighs less than the gradient-preserving slope."),
    Rule("zero_centred",
         "zero-centred output without normalization: +0.5 (LeCun et al. 1998)."),
    Rule("self_normalizing",
         "self-normalizing (SELU): -1 with batch/layer normalization, which overrides its fixed "
         "point so its advantage is lost (it is still a non-saturating unit, better than a "
         "sigmoid); +1 when deep without normalization (Klambauer et al. 2017). Needs "
         "lecun_normal."),
    Rule("smooth_non_saturating",
         "smooth (C∞) and rectifier-like: +0.25, gradients change continuously (Hendrycks & "
         "Gimpel 2016; Ramachandran et al. 2017)."),
    Rule("compute_cost",
         "-COST_WEIGHT[priority] * log2(measured relative cost)."),
)


def _score(p: dict[str, Any], depth: int, normalization: str | None, residual: bool,
           priority: str, vanishing_ratio: float, name: str = "") -> tuple[float, list[str]]:
    score, reasons = 0.0, []
    deep = depth >= DEEP_NETWORK
    known = ACTIVATION_FACTS.get(name)
    if known is not None and known.family == "rectifier":
        score += 1.0
        reasons.append(f"rectifier: slope ~1 where active; with {known.initializer} the "
                       "gradient keeps its size through depth: +1")
    if p["max_derivative"] < 1 and not residual:
        attenuation = p["max_derivative"] ** depth
        if attenuation < vanishing_ratio:
            points = min(3.0, math.log10(vanishing_ratio / attenuation))
            score -= points
            reasons.append(
                f"f' never exceeds {p['max_derivative']:.2f}, so {depth} layers can shrink the "
                f"gradient to {attenuation:.1e} (< {vanishing_ratio:g}): -{points:.2f}")
    if p["saturates_left"] and p["saturates_right"] and deep and normalization is None:
        score -= 1.0
        reasons.append(f"saturates on both sides ({p['saturates_where']}) in a deep network "
                       "without normalization: -1")
    if p["zero_gradient_fraction"] >= DEAD_RISK_HIGH:
        score -= 0.25
        reasons.append(f"zero gradient on {p['zero_gradient_fraction']:.0%} of a Gaussian input: "
                       "units can die: -0.25")
    if p["zero_centred"] and normalization is None:
        score += 0.5
        reasons.append(f"zero-centred output (E[f(z)] = {p['mean_output']:.2f}): +0.5")
    if p["self_normalizing"]:
        if normalization is not None:
            score -= 1.0
            reasons.append(f"self-normalizing, but {normalization} normalization overrides its "
                           "fixed point: -1")
        elif deep:
            score += 1.0
            reasons.append("self-normalizing: keeps mean 0 / variance 1 through depth "
                           "(with lecun_normal): +1")
    if p["smoothness"].startswith("smooth") and p["rectifier_like"]:
        score += 0.25
        reasons.append("smooth and non-saturating on the right: +0.25")
    weight = COST_WEIGHT[priority]
    if weight and "relative_cost" in p:
        points = weight * math.log2(max(p["relative_cost"], 1e-9))
        score -= points
        reasons.append(f"measured cost {p['relative_cost']:.1f}x ReLU: {-points:+.2f}")
    if not reasons:
        reasons.append("no rule applies: neutral")
    return score, reasons


def output_activation(task: str) -> tuple[str, str]:
    """The output activation for a task, with the reason.

    Binary tasks take the catalog activation whose measured range is [0, 1] (sigmoid: a
    probability); multiclass tasks take softmax over logits; regression keeps a linear output.

    Args:
        task: One of :data:`TASKS`.

    Returns:
        ``(activation, reason)``.
    """
    check_choice("task", task, TASKS)
    if task == "binary":
        for name in ACTIVATIONS:
            p = properties(name)
            if p["output_min"] >= 0 and abs(p["output_max"] - 1) < 1e-6:
                return name, (f"measured range {p['output_range']} is a probability: use it only "
                              "at the output for binary tasks")
    if task == "multiclass":
        return "softmax", "class probabilities that sum to 1 (or logits + from_logits=True)"
    return "linear", "regression targets are unbounded: no output squashing"


def recommend(depth: int = 20, task: str = "multiclass", normalization: str | None = None,
              residual: bool = False, priority: str = "balanced",
              candidates: Sequence[str] | None = None, table: pd.DataFrame | None = None
              ) -> pd.DataFrame:
    """Ranked hidden-layer activations for a scenario, each with the reasons for its rank.

    Every candidate starts at 0 points; the :data:`RULES` add or subtract points from its
    measured properties (:func:`catalog`) and the scenario. Ties keep catalog order. The last
    row gives the output-layer activation for ``task``.

    Args:
        depth: Number of hidden layers.
        task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        normalization: ``None``, ``"batch"`` or ``"layer"``.
        residual: Whether the network has skip connections.
        priority: ``"balanced"``, ``"accuracy"`` (ignore cost) or ``"speed"``.
        candidates: Activation names to rank (default: all).
        table: A :func:`catalog` table to reuse (measured once; makes rankings repeatable).

    Returns:
        DataFrame with columns ``role`` (``hidden``/``output``), ``rank``, ``activation``,
        ``initializer``, ``score``, ``reason``.

    Raises:
        ValueError: Invalid depth, task, normalization, priority or activation name.

    Example:
        >>> recommend(depth=50, normalization=None).iloc[0]["activation"]
        'selu'
    """
    check_positive_int("depth", depth)
    check_choice("task", task, TASKS)
    check_choice("normalization", normalization, NORMALIZATION_CHOICES)
    check_choice("priority", priority, PRIORITIES)
    names = [resolve_name(n, "candidates") for n in (candidates or available_activations())]
    if table is None:
        table = catalog(names, cost=COST_WEIGHT[priority] > 0)
    vanishing = Thresholds().vanishing_ratio
    rows = []
    for name in names:
        p = table.loc[name].to_dict()
        score, reasons = _score(p, depth, normalization, bool(residual), priority, vanishing,
                                name)
        rows.append({"role": "hidden", "activation": name, "initializer": p["pairs_with"],
                     "score": round(score, 3), "reason": "; ".join(reasons)})
    hidden = pd.DataFrame(rows).sort_values("score", ascending=False, kind="stable")
    hidden.insert(1, "rank", np.arange(1, len(hidden) + 1))
    out_name, out_reason = output_activation(task)
    out = pd.DataFrame([{"role": "output", "rank": 1, "activation": out_name,
                         "initializer": "glorot_uniform", "score": float("nan"),
                         "reason": out_reason}])
    return pd.concat([hidden, out], ignore_index=True)
