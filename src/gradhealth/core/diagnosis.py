"""Turn per-variable gradient statistics into layer verdicts, a score, findings and advice.

Plain NumPy/pandas; knows nothing of Keras. The Keras-facing :mod:`gradhealth.diagnosis` passes in
the statistics table and a ``context`` dict of facts about the model (hidden activations,
initializers, normalization and residual layers, depth).

Statuses, from most to least severe: ``nonfinite`` > ``exploding`` > ``dead`` > ``vanishing`` >
``healthy``. The overall status is the most severe status found in any layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradhealth.core.stats import combine_norms
from gradhealth.core.thresholds import Thresholds

__all__ = ["CATEGORIES", "RELU_FAMILY", "SATURATING_ACTIVATIONS", "SEVERITY", "STATUSES",
           "Recommendation", "aggregate_layers", "classify_layers", "findings", "health_score",
           "overall_status", "recommendations"]

STATUSES: tuple[str, ...] = ("healthy", "vanishing", "dead", "exploding", "nonfinite")
SEVERITY: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
SATURATING_ACTIVATIONS: frozenset[str] = frozenset(
    {"sigmoid", "tanh", "hard_sigmoid", "softsign", "hard_tanh", "log_sigmoid"}
)
RELU_FAMILY: frozenset[str] = frozenset({"relu", "relu6", "leaky_relu", "elu", "selu", "gelu",
                                         "silu", "swish", "mish", "celu", "hard_silu"})
CATEGORIES: tuple[str, ...] = ("activation", "initializer", "normalization", "residual",
                               "learning_rate", "clipping", "data", "optimizer")


@dataclass(frozen=True)
class Recommendation:
    """One concrete fix, tied to a finding.

    Attributes:
        category: One of ``CATEGORIES``.
        action: What to change, imperative ("Replace sigmoid with ReLU in hidden_1..hidden_30").
        reason: Why, citing the measured numbers.
        layers: The layers concerned (empty = whole network).
        reference: The paper the remedy comes from.
        params: Machine-readable settings for the change (e.g. ``{"activation": "relu"}``),
            which :func:`gradhealth.prescribe` turns into a rebuild.
    """

    category: str
    action: str
    reason: str
    layers: tuple[str, ...] = ()
    reference: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.category}] {self.action} — {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def aggregate_layers(variables: pd.DataFrame) -> pd.DataFrame:
    """One row per layer from the per-variable statistics, input to output.

    Norms combine as the L2 norm of the concatenated variables; means and fractions are weighted
    by variable size; the dead-unit fraction is the kernel's (the first variable with two or more
    axes) or, for layers without one, the largest over the layer's vectors.
    """
    cols = {c: variables[c].to_numpy() for c in (
        "layer", "size", "grad_norm", "grad_mean_abs", "grad_max_abs", "zero_fraction",
        "nonfinite_count", "weight_norm", "dead_unit_fraction")}
    ndims = [len(shape) for shape in variables["shape"]]
    connected = (variables["connected"].to_numpy(dtype=bool) if "connected" in variables
                 else np.ones(len(variables), dtype=bool))
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(cols["layer"]):
        groups.setdefault(layer, []).append(i)
    rows = []
    for position, (layer, idx) in enumerate(groups.items(), start=1):
        sizes = cols["size"][idx].astype(np.float64)
        total = float(sizes.sum())
        n_bad = int(cols["nonfinite_count"][idx].sum())
        kernels = [i for i in idx if ndims[i] >= 2]
        dead = (cols["dead_unit_fraction"][kernels[0]] if kernels
                else cols["dead_unit_fraction"][idx].max())
        grad_norm = combine_norms(cols["grad_norm"][idx])
        weight_norm = combine_norms(cols["weight_norm"][idx])
        max_abs = cols["grad_max_abs"][idx].astype(np.float64)
        rows.append({
            "position": position,
            "layer": layer,
            "n_params": int(total),
            "grad_norm": grad_norm if n_bad < total else float("nan"),
            "grad_mean_abs": _weighted(cols["grad_mean_abs"][idx].astype(np.float64),
                                       sizes - cols["nonfinite_count"][idx]),
            "grad_max_abs": float(np.nanmax(max_abs)) if np.isfinite(max_abs).any()
            else float("nan"),
            "zero_fraction": float(np.dot(cols["zero_fraction"][idx], sizes) / total),
            "nonfinite_count": n_bad,
            "weight_norm": weight_norm,
            "grad_to_weight": grad_norm / weight_norm if weight_norm > 0 else float("nan"),
            "dead_unit_fraction": float(dead),
            "connected": bool(connected[idx].any()),
        })
    return pd.DataFrame(rows)


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    ok = np.isfinite(values) & (weights > 0)
    return float(np.dot(values[ok], weights[ok]) / weights[ok].sum()) if ok.any() else float("nan")


def classify_layers(layers: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """Add ``status``, ``decades_beyond`` and ``credit`` columns to a layer table.

    Rules, per connected layer (unconnected layers get status ``"unused"`` and no credit):

    * ``nonfinite``: any NaN/inf gradient entry.
    * ``exploding``: norm > ``exploding_norm``, or norm > ``exploding_ratio`` x the norm of the
      last layer (the gradient grew that much on its way back from the output).
    * ``dead``: dead-unit fraction >= ``dead_fraction`` — unless the layer's whole gradient is
      zero *and* a layer nearer the output is vanishing: then float32 underflowed a vanishing
      gradient to 0, and the layer is ``vanishing``.
    * ``vanishing``: norm < ``vanishing_norm``, or norm < ``vanishing_ratio`` x the largest
      norm among the layers that are not exploding.

    ``credit`` (used by :func:`health_score`): 1 for healthy; 0 for nonfinite; for vanishing and
    exploding ``0.5 * max(0, 1 - decades_beyond / score_decades)``, where ``decades_beyond`` is
    how many powers of ten the norm lies past its threshold; for dead ``0.5 * (1 - dead
    fraction)``.
    """
    t = thresholds
    out = layers.copy()
    connected = out["connected"].to_numpy(dtype=bool)
    norms = out["grad_norm"].to_numpy(dtype=np.float64)
    bad = (out["nonfinite_count"].to_numpy() > 0) | ~np.isfinite(norms)
    finite = connected & ~bad
    last_norm = float(norms[finite][-1]) if finite.any() else float("nan")
    over = np.array([max(_decades(n, t.exploding_norm), _decades(n, t.exploding_ratio * last_norm))
                     if ok else 0.0 for n, ok in zip(norms, finite, strict=True)])
    # "Vanishing relative to the largest layer" ignores exploding layers: one exploding layer
    # does not make the healthy rest vanish.
    calm = finite & (over == 0)
    max_norm = float(norms[calm].max()) if calm.any() else float("nan")
    status = ["healthy"] * len(out)
    decades = [0.0] * len(out)
    for i in range(len(out) - 1, -1, -1):  # output to input: underflow rule looks downstream
        n = norms[i]
        if not connected[i]:
            status[i] = "unused"
            continue
        if bad[i]:
            status[i] = "nonfinite"
            continue
        if over[i] > 0:
            status[i], decades[i] = "exploding", float(over[i])
            continue
        under = max(_decades(t.vanishing_norm, n), _decades(t.vanishing_ratio * max_norm, n))
        downstream_vanishing = any(s == "vanishing" for s in status[i + 1:])
        if out["dead_unit_fraction"].iat[i] >= t.dead_fraction and not (
            n == 0.0 and downstream_vanishing
        ):
            status[i] = "dead"
            continue
        if under > 0:
            status[i], decades[i] = "vanishing", under
    out["status"] = status
    out["decades_beyond"] = decades
    out["credit"] = [_credit(s, d, f, t) for s, d, f in
                     zip(status, decades, out["dead_unit_fraction"], strict=True)]
    return out


def _decades(big: float, small: float) -> float:
    """log10(big / small) when big > small, else 0; infinite when small is 0 and big is not."""
    if not (np.isfinite(big) and np.isfinite(small)) or big <= small:
        return 0.0
    if small <= 0.0:
        return math.inf
    return math.log10(big / small)


def _credit(status: str, decades: float, dead_fraction: float, t: Thresholds) -> float:
    if status == "healthy":
        return 1.0
    if status in ("vanishing", "exploding"):
        return 0.5 * max(0.0, 1.0 - decades / t.score_decades)
    if status == "dead":
        return 0.5 * (1.0 - float(dead_fraction))
    return 0.0


def overall_status(layers: pd.DataFrame) -> str:
    """The most severe layer status (``healthy`` when every used layer is healthy)."""
    found = [s for s in layers["status"] if s in SEVERITY]
    return max(found, key=SEVERITY.__getitem__) if found else "healthy"


def health_score(layers: pd.DataFrame) -> float:
    """Health score 0-100: ``100 * mean(credit)`` over the layers that receive a gradient.

    A network whose every layer is healthy scores 100; each unhealthy layer contributes at most
    half credit, less the further it is past its threshold (see :func:`classify_layers`); any
    non-finite gradient caps the score at 50 because one NaN update destroys the whole model.
    """
    used = layers[layers["status"] != "unused"]
    if used.empty:
        return 0.0
    score = 100.0 * float(used["credit"].mean())
    if (used["status"] == "nonfinite").any():
        score = min(score, 50.0)
    return round(score, 1)


def _names(layers: pd.DataFrame, limit: int = 4) -> str:
    names = list(layers["layer"])
    if len(names) <= limit:
        return ", ".join(f"'{n}'" for n in names)
    return f"'{names[0]}' ... '{names[-1]}' ({len(names)} layers)"


def findings(layers: pd.DataFrame, thresholds: Thresholds, context: dict[str, Any]) -> list[str]:
    """Plain-English sentences describing what the layer table shows, with layers and numbers."""
    t = thresholds
    used = layers[layers["status"] != "unused"]
    out: list[str] = []
    if used.empty:
        return ["No layer received a gradient: the loss does not depend on any trainable weight."]
    first, last = used.iloc[0], used.iloc[-1]
    norms = used["grad_norm"].to_numpy(dtype=np.float64)
    finite = norms[np.isfinite(norms)]
    unused = layers[layers["status"] == "unused"]
    if len(unused):
        out.append(f"{_names(unused)} receive no gradient at all: they are not connected to the "
                   "loss (frozen path or unused branch).")
    bad = used[used["status"] == "nonfinite"]
    if len(bad):
        out.append(f"{int(bad['nonfinite_count'].sum())} gradient entries are NaN or inf in "
                   f"{_names(bad)}; a single such update turns the weights into NaN.")
    exploding = used[used["status"] == "exploding"]
    if len(exploding):
        top = exploding.loc[exploding["grad_norm"].idxmax()]
        out.append(
            f"Gradients explode in {_names(exploding)}: the largest norm is "
            f"{top['grad_norm']:.3g} in '{top['layer']}', above the limit of "
            f"{t.exploding_norm:.3g} (or {t.exploding_ratio:.3g}x the last layer's norm, "
            f"{last['grad_norm']:.3g})."
        )
    dead = used[used["status"] == "dead"]
    if len(dead):
        worst = dead.loc[dead["dead_unit_fraction"].idxmax()]
        out.append(
            f"{_names(dead)} have mostly dead units: in '{worst['layer']}' "
            f"{100 * worst['dead_unit_fraction']:.0f}% of units got an exactly zero gradient on "
            f"this batch (threshold {100 * t.dead_fraction:.0f}%)."
        )
    vanishing = used[used["status"] == "vanishing"]
    if len(vanishing):
        smallest = vanishing.loc[vanishing["grad_norm"].idxmin()]
        n_layers = len(used)
        ratio = first["grad_norm"] / last["grad_norm"] if last["grad_norm"] > 0 else float("nan")
        per_layer = ratio ** (1.0 / max(n_layers - 1, 1)) if ratio > 0 else float("nan")
        zeros = vanishing[vanishing["grad_norm"] == 0.0]
        out.append(
            f"Gradients vanish in {_names(vanishing)}: the first layer '{first['layer']}' gets a "
            f"gradient norm of {first['grad_norm']:.3g}, {ratio:.3g} times that of the last layer "
            f"'{last['layer']}' ({last['grad_norm']:.3g}), i.e. about x{per_layer:.3g} per layer "
            f"across {n_layers} layers; the smallest is {smallest['grad_norm']:.3g} in "
            f"'{smallest['layer']}'."
        )
        if len(zeros):
            out.append(f"In {_names(zeros)} the gradient underflowed to exactly 0.0 in float32: "
                       "these layers cannot learn at all.")
    if not (len(bad) or len(exploding) or len(dead) or len(vanishing)):
        spread = finite.max() / finite.min() if finite.size and finite.min() > 0 else float("nan")
        out.append(
            f"All {len(used)} layers have healthy gradients: norms range from {finite.min():.3g} "
            f"to {finite.max():.3g} (a spread of {spread:.3g}x, limit "
            f"{1 / t.vanishing_ratio:.3g}x), no dead layers, no NaN/inf."
        )
    return out


def recommendations(layers: pd.DataFrame, thresholds: Thresholds, context: dict[str, Any]
                    ) -> list[Recommendation]:
    """Concrete fixes tied to the statuses found, using what is known about the model.

    ``context`` keys used (all optional): ``activations`` (layer -> activation name),
    ``initializers`` (layer -> initializer class name), ``has_normalization``,
    ``has_residual``, ``depth``, ``learning_rate``.
    """
    used = layers[layers["status"] != "unused"]
    statuses = set(used["status"])
    acts: dict[str, str] = context.get("activations", {})
    inits: dict[str, str] = context.get("initializers", {})
    depth = int(context.get("depth", len(used)))
    has_norm = bool(context.get("has_normalization", False))
    has_res = bool(context.get("has_residual", False))
    lr = context.get("learning_rate")
    recs: list[Recommendation] = []
    all_layers = tuple(used["layer"])

    if "nonfinite" in statuses:
        recs.append(Recommendation(
            "data", "Check the inputs and the loss for NaN/inf (use from_logits=True losses "
            "instead of log(softmax))",
            "non-finite gradients start either in the data or in a numerically unstable loss",
            all_layers, "Goodfellow, Bengio & Courville 2016, Deep Learning, sec. 4.1"))
        recs.append(Recommendation(
            "clipping", "Train with gradhealth.GradientHealthMonitor(on_nonfinite='skip') and "
            "clip the global gradient norm to 1.0",
            "a skipped update keeps the weights finite while the cause is found",
            all_layers, "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs",
            {"clipping": "global_norm", "clip_value": 1.0}))

    if "exploding" in statuses:
        ex = used[used["status"] == "exploding"]
        big_init = sorted({inits[n] for n in ex["layer"] if n in inits
                           and inits[n] not in ("HeNormal", "HeUniform", "GlorotUniform",
                                                "GlorotNormal", "LecunNormal", "LecunUniform",
                                                "Orthogonal")})
        relu_like = any(acts.get(n, "") in RELU_FAMILY for n in ex["layer"])
        target = "he_normal" if relu_like else "glorot_uniform"
        recs.append(Recommendation(
            "initializer",
            f"Re-initialize the kernels with {target}" +
            (f" instead of {', '.join(big_init)}" if big_init else ""),
            f"the largest layer gradient norm is {ex['grad_norm'].max():.3g}; a variance-"
            "preserving initializer keeps each layer's gain near 1",
            tuple(ex["layer"]), "He et al. 2015, Delving Deep into Rectifiers" if relu_like
            else "Glorot & Bengio 2010, Understanding the difficulty of training deep FNNs",
            {"kernel_initializer": target}))
        recs.append(Recommendation(
            "clipping", "Clip the global gradient norm (clipnorm=1.0 or gradhealth AutoClip)",
            "bounds every update while the root cause is fixed",
            tuple(ex["layer"]), "Pascanu, Mikolov & Bengio 2013; Seetharaman et al. 2020 (AutoClip)",
            {"clipping": "global_norm", "clip_value": 1.0}))
        lr_text = f" (now {lr:.3g})" if isinstance(lr, float) else ""
        recs.append(Recommendation(
            "learning_rate", f"Lower the learning rate by 10x{lr_text}",
            "steps proportional to exploding gradients overshoot",
            all_layers, "Bengio 2012, Practical recommendations for gradient-based training",
            {"learning_rate_factor": 0.1}))
        if not has_norm:
            recs.append(Recommendation(
                "normalization", "Add LayerNormalization (BatchNormalization for long CNN "
                "training) before each hidden activation",
                "normalization resets each layer's scale, so gains cannot compound",
                all_layers, "Ba, Kiros & Hinton 2016, Layer Normalization; Ioffe & Szegedy 2015",
                {"normalization": "layer"}))

    if "dead" in statuses:
        dd = used[used["status"] == "dead"]
        recs.append(Recommendation(
            "activation", "Replace ReLU with LeakyReLU, ELU or GELU in the dead layers",
            f"up to {100 * dd['dead_unit_fraction'].max():.0f}% of units output zero for every "
            "example; a non-zero negative slope lets them recover",
            tuple(dd["layer"]), "Maas et al. 2013 (Leaky ReLU); Clevert et al. 2016 (ELU)",
            {"activation": "leaky_relu"}))
        recs.append(Recommendation(
            "initializer", "Use He initialization and standardized inputs",
            "too-negative pre-activations at initialization kill ReLU units",
            tuple(dd["layer"]), "Lu et al. 2019, Dying ReLU and Initialization",
            {"kernel_initializer": "he_normal"}))
        recs.append(Recommendation(
            "learning_rate", "Lower the learning rate",
            "a too-large step pushes biases negative and kills units permanently",
            tuple(dd["layer"]), "Lu et al. 2019", {"learning_rate_factor": 0.1}))

    if "vanishing" in statuses:
        van = used[used["status"] == "vanishing"]
        hidden = [n for n in all_layers if n in acts]
        saturating = [n for n in hidden if acts[n] in SATURATING_ACTIVATIONS]
        if saturating:
            names = sorted({acts[n] for n in saturating})
            recs.append(Recommendation(
                "activation", f"Replace {'/'.join(names)} with ReLU (or GELU/Swish) in "
                f"{len(saturating)} hidden layer(s)",
                f"the derivative of {names[0]} is at most "
                f"{0.25 if names[0] == 'sigmoid' else 1.0:g} and near 0 when saturated, so the "
                f"gradient shrinks at every layer; ReLU's derivative is exactly 1 where active",
                tuple(saturating), "Glorot, Bordes & Bengio 2011, Deep Sparse Rectifier Networks",
                {"activation": "relu"}))
            recs.append(Recommendation(
                "initializer", "Use He normal initialization with the ReLU-family activation",
                "He init keeps forward and backward variance constant through ReLU layers",
                tuple(saturating), "He et al. 2015, Delving Deep into Rectifiers",
                {"kernel_initializer": "he_normal"}))
        else:
            recs.append(Recommendation(
                "initializer", "Use a variance-preserving initializer (He for ReLU family, "
                "Glorot for tanh) or calibrate with gradhealth.lsuv_init",
                "the layers' gains multiply to a vanishing product",
                tuple(van["layer"]), "Mishkin & Matas 2016, All you need is a good init",
                {"kernel_initializer": "he_normal"}))
        if not has_norm:
            recs.append(Recommendation(
                "normalization", "Add LayerNormalization (BatchNormalization for long CNN "
                "training) before each hidden activation",
                "it keeps pre-activations in the non-saturated range at every depth; layer norm "
                "behaves the same in training and inference, whereas batch norm's moving "
                "statistics need many steps before inference is accurate",
                all_layers, "Ba, Kiros & Hinton 2016, Layer Normalization; Ioffe & Szegedy 2015",
                {"normalization": "layer"}))
        if depth >= 10 and not has_res:
            recs.append(Recommendation(
                "residual", f"Add residual (skip) connections around the hidden layers ({depth} weighted layers deep)",
                "an identity path carries the gradient past every layer unchanged",
                all_layers, "He et al. 2016, Deep Residual Learning", {"residual": True}))
        recs.append(Recommendation(
            "optimizer", "Use Adam (per-parameter step sizes) rather than plain SGD",
            "it rescales small gradients, partly compensating the imbalance between layers",
            all_layers, "Kingma & Ba 2015, Adam", {"optimizer": "adam"}))
    return recs
