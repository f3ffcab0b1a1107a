"""Turn per-variable gradient statistics into layer verdicts, a score, findings and advice.

Plain NumPy/pandas; knows nothing of Keras. The Keras-facing :mod:`gradhealth.diagnosis` passes in
the statistics table and a ``context`` dict of facts about the model (each layer's role and
block, hidden activations, initializers, normalization and residual layers, the optimizer, the
embedding rows the batch touched, the gradient through time of recurrent layers).

The diagnosis reads gradients the way the literature says they can be read (the README's "How
the diagnosis decides" lists every rule with its source):

- **Along depth**, only the signal that flows through the network is evidence: kernels and
  recurrent cells, grouped into blocks (a residual segment, a custom layer such as a
  transformer block, else a single layer). Attention query/key projections, biases and
  normalization scales are not depth evidence on their own (:data:`ROLES`).
- **Kernels followed by normalization** are scale-invariant: judged by ``||g|| / ||W||``.
- **Embedding tables** are judged on the rows the batch touched.
- **Ungated recurrent layers** are judged through time, from the gradient reaching each step.

Statuses, from most to least severe: ``nonfinite`` > ``exploding`` > ``dead`` > ``vanishing`` >
``healthy``. The overall status is the most severe status found in any layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradhealth.core.knowledge import (
    ACTIVATION_FACTS,
    INITIALIZER_SOURCES,
    facts,
    matched_initializer,
)
from gradhealth.core.table import Table, as_table, like
from gradhealth.core.thresholds import Thresholds
from gradhealth.core.timeprofile import memory_horizon

__all__ = ["ADAPTIVE_OPTIMIZERS", "CATEGORIES", "NOT_DEPTH_EVIDENCE", "RELU_FAMILY", "ROLES",
           "SATURATING_ACTIVATIONS", "SCORE_MEANING", "SEVERITY", "STATUSES", "Recommendation",
           "aggregate_layers", "annotate_layers", "classify_layers", "findings", "health_score",
           "overall_status", "recommendations"]

STATUSES: tuple[str, ...] = ("healthy", "vanishing", "dead", "exploding", "nonfinite")
SEVERITY: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
SATURATING_ACTIVATIONS: frozenset[str] = frozenset(
    {n for n, f in ACTIVATION_FACTS.items() if f.family in ("saturating", "symmetric")}
    | {"hard_tanh", "log_sigmoid"}
)
"""Activations whose derivative is below 1 away from zero (from the knowledge table)."""
RELU_FAMILY: frozenset[str] = frozenset(
    {n for n, f in ACTIVATION_FACTS.items() if f.family in ("rectifier", "self_normalizing")}
    | {"swish"}
)
"""Rectifier-like activations (from the knowledge table)."""
CATEGORIES: tuple[str, ...] = ("activation", "initializer", "normalization", "residual",
                               "learning_rate", "clipping", "data", "optimizer", "architecture")
ADAPTIVE_OPTIMIZERS: frozenset[str] = frozenset(
    {"Adam", "AdamW", "Adamax", "Nadam", "Adafactor", "Adagrad", "Adadelta", "RMSprop", "Lion",
     "Ftrl", "Lamb", "Muon"})
"""Optimizers with per-parameter step sizes: "use Adam" is never proposed to a model compiled
with one of them."""

ROLES: dict[str, str] = {
    "kernel": "kernel: gradient norm along depth (vanishing_ratio, exploding_ratio, "
              "vanishing_norm, exploding_norm)",
    "recurrent": "recurrent cell: gradient norm along depth; through time when ungated",
    "scale_invariant": "kernel followed by normalization: judged by ||g||/||W|| "
                       "(van Laarhoven 2017)",
    "embedding": "embedding: judged on the rows this batch touched",
    "attention_qk": "attention query/key: small at initialization by design (Xiong et al. "
                    "2020); not depth evidence",
    "layer_scaled": "inside a residual branch that a learnable LayerScale multiplies (1e-6 "
                    "to 0.1 at initialization by design: Touvron et al. 2021); not depth "
                    "evidence",
    "normalization": "normalization scale/offset: not depth evidence",
    "vector": "biases/vectors only: not depth evidence",
}
"""How each kind of layer's gradient is read (the ``role`` column of the layer table)."""
_DEPTH_FAMILY = {"kernel": "norm", "recurrent": "norm", "scale_invariant": "relative"}
NOT_DEPTH_EVIDENCE: frozenset[str] = frozenset(ROLES) - set(_DEPTH_FAMILY) - {"embedding"}
"""Roles whose layers are healthy unless NaN/inf: their gradient is not read along depth."""

SCORE_MEANING: str = (
    "The score (0-100) measures gradient health on this batch: whether every layer receives a "
    "usable gradient (none vanishing, exploding, dead or NaN). It says nothing about accuracy: a "
    "network at chance level can score 100, and a network that fits well can score less.")
"""What the health score means, shown in every rendering of a report."""


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


def _group_norms(values: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """Per group, the L2 norm of the concatenated tensors whose norms are ``values``.

    The same as :func:`gradhealth.core.stats.combine_norms` for each group (non-finite entries
    left out, each group scaled by its largest entry so nothing underflows), for all groups at
    once.
    """
    v = np.where(np.isfinite(values), np.abs(values), 0.0)
    top = np.zeros(n)
    np.maximum.at(top, codes, v)
    scale = top[codes]
    scaled = np.divide(v, scale, out=np.zeros_like(v), where=scale > 0)
    sums = np.zeros(n)
    np.add.at(sums, codes, scaled * scaled)
    return top * np.sqrt(sums)


def aggregate_layers(variables: pd.DataFrame | Table) -> pd.DataFrame | Table:
    """One row per layer from the per-variable statistics, input to output.

    Norms combine as the L2 norm of the concatenated variables; means and fractions are weighted
    by variable size; the dead-unit fraction is the kernel's (the first variable with two or more
    axes) or, for layers without one, the largest over the layer's vectors. ``kernel_grad_norm``
    and ``kernel_weight_norm`` combine the variables with two or more axes only (the weights
    whose scale a normalization removes); ``relative_grad`` is their ratio. Variables with no
    entries (a shape with a 0) are left out: a layer holding only such variables has no row.

    Args:
        variables: The per-variable statistics (:func:`gradhealth.gradient_stats`), as a
            DataFrame or a :class:`~gradhealth.core.table.Table`.

    Returns:
        The layer table, of the same kind as ``variables``.
    """
    return like(variables, _aggregate(as_table(variables)))


def _aggregate(variables: Table) -> Table:
    # A variable with no entries has no gradient to read (its statistics are all 0); a layer of
    # such variables only would otherwise show a NaN norm and read as non-finite.
    sized = np.asarray(variables["size"]) > 0
    if not sized.all():
        variables = variables.take(np.flatnonzero(sized))
    layer = variables["layer"]
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(name, len(index)) for name in layer), dtype=np.int64,
                        count=len(layer))
    names = list(index)
    n = len(names)
    f64 = {c: np.asarray(variables[c], dtype=np.float64) for c in (
        "size", "grad_norm", "grad_mean_abs", "grad_max_abs", "zero_fraction",
        "nonfinite_count", "weight_norm", "dead_unit_fraction")}
    kernel = np.fromiter((len(shape) >= 2 for shape in variables["shape"]), dtype=bool,
                         count=len(layer))
    connected = (np.asarray(variables["connected"], dtype=bool) if "connected" in variables
                 else np.ones(len(layer), dtype=bool))

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=n)

    size = total(f64["size"])
    n_bad = total(f64["nonfinite_count"])
    grad_norm = _group_norms(f64["grad_norm"], codes, n)
    weight_norm = _group_norms(f64["weight_norm"], codes, n)
    k_codes = codes[kernel]
    has_kernel = np.zeros(n, dtype=bool)
    has_kernel[k_codes] = True
    k_grad = np.where(has_kernel, _group_norms(f64["grad_norm"][kernel], k_codes, n), np.nan)
    k_weight = np.where(has_kernel, _group_norms(f64["weight_norm"][kernel], k_codes, n), np.nan)
    finite_size = f64["size"] - f64["nonfinite_count"]
    mean_ok = np.isfinite(f64["grad_mean_abs"]) & (finite_size > 0)
    mean_num = total(np.where(mean_ok, f64["grad_mean_abs"] * finite_size, 0.0))
    mean_den = total(np.where(mean_ok, finite_size, 0.0))
    max_abs = np.full(n, -np.inf)
    np.fmax.at(max_abs, codes, np.where(np.isfinite(f64["grad_max_abs"]), f64["grad_max_abs"],
                                        -np.inf))
    dead = np.full(n, -np.inf)
    np.fmax.at(dead, codes, f64["dead_unit_fraction"])
    kernel_rows = np.flatnonzero(kernel)
    first = np.unique(codes[kernel_rows], return_index=True)  # first kernel of each layer
    dead[first[0]] = f64["dead_unit_fraction"][kernel_rows[first[1]]]
    any_connected = np.bincount(codes, weights=connected, minlength=n) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return Table({
            "position": np.arange(1, n + 1),
            "layer": names,
            "n_params": size.astype(np.int64),
            "grad_norm": np.where(n_bad < size, grad_norm, np.nan),
            "grad_mean_abs": np.where(mean_den > 0, mean_num / mean_den, np.nan),
            "grad_max_abs": np.where(np.isfinite(max_abs), max_abs, np.nan),
            "zero_fraction": total(f64["zero_fraction"] * f64["size"]) / size,
            "nonfinite_count": n_bad.astype(np.int64),
            "weight_norm": weight_norm,
            "grad_to_weight": np.where(weight_norm > 0, grad_norm / weight_norm, np.nan),
            "kernel_grad_norm": k_grad,
            "kernel_weight_norm": k_weight,
            "relative_grad": np.where(k_weight > 0, k_grad / k_weight, np.nan),
            "dead_unit_fraction": dead,
            "connected": any_connected,
        })


def annotate_layers(layers: pd.DataFrame | Table, context: dict[str, Any] | None = None
                    ) -> pd.DataFrame | Table:
    """Add ``role``, ``block`` and, for embeddings, the touched rows' ``relative_grad``.

    Without a context (a statistics table alone) a layer with a variable of two or more axes is
    a ``kernel`` and every layer is its own block, which reproduces the plain-MLP rules.

    Returns:
        The layer table with the new columns, of the same kind as ``layers``.
    """
    return like(layers, _annotate(as_table(layers), context or {}))


def _annotate(layers: Table, ctx: dict[str, Any]) -> Table:
    roles = ctx.get("roles") or {}
    blocks = ctx.get("blocks") or {}
    rows = ctx.get("embedding_rows") or {}
    names = layers["layer"]
    has_kernel = (np.isfinite(np.asarray(layers["kernel_weight_norm"], dtype=np.float64))
                  if "kernel_weight_norm" in layers else np.ones(len(layers), dtype=bool))
    rel = (np.array(layers["relative_grad"], dtype=np.float64) if "relative_grad" in layers
           else np.full(len(layers), np.nan))
    for i, name in enumerate(names):
        info = rows.get(name)
        if info and info.get("weight_norm"):
            rel[i] = float(layers["grad_norm"][i]) / float(info["weight_norm"])
    return layers.with_columns(
        role=[roles.get(n, "kernel" if k else "vector") for n, k in zip(names, has_kernel,
                                                                         strict=True)],
        block=[blocks.get(n, n) for n in names],
        relative_grad=rel)


def _block_signals(idx: list[int], blocks: list[str], family: str, norms: np.ndarray,
                   k_grad: np.ndarray, k_weight: np.ndarray) -> dict[str, float]:
    """Each block's signal: the combined gradient norm ("norm") or the combined kernel
    gradient over the combined kernel weight ("relative")."""
    names = list(dict.fromkeys(blocks[i] for i in idx))
    code = {b: j for j, b in enumerate(names)}
    codes = np.array([code[blocks[i]] for i in idx], dtype=np.int64)
    if family == "norm":
        values = _group_norms(norms[idx], codes, len(names))
    else:
        g = _group_norms(k_grad[idx], codes, len(names))
        w = _group_norms(k_weight[idx], codes, len(names))
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(w > 0, g / w, np.nan)
    return {b: float(v) for b, v in zip(names, values, strict=True)}


def classify_layers(layers: pd.DataFrame | Table, thresholds: Thresholds,
                    context: dict[str, Any] | None = None) -> pd.DataFrame | Table:
    """Add ``status``, ``decades_beyond``, ``credit``, ``signal`` and ``rule`` columns.

    Rules, per connected layer (unconnected layers get status ``"unused"`` and no credit):

    * ``nonfinite``: any NaN/inf gradient entry, whatever the layer's role.
    * Layers that are not depth evidence (attention query/key, normalization, vectors only; see
      :data:`ROLES`) are otherwise ``healthy``; the ``rule`` column says why they are not judged.
    * Depth evidence is judged per **block** (``block`` column; a layer is its own block unless
      the context groups it), in two families that are never compared with each other:
      plain kernels and recurrent cells by the gradient norm (``signal`` = the block's combined
      norm), kernels followed by normalization by ``||g|| / ||W||`` (scale-invariant: van
      Laarhoven 2017).

      - ``exploding``: a plain kernel's norm > ``exploding_norm``, or the block's signal >
        ``exploding_ratio`` x the signal of the family's last block (the gradient grew that
        much on its way back from the output). Scale-invariant kernels have no absolute upper
        limit (a large step grows ``||W||`` and shrinks the next one).
      - ``dead``: the kernel's dead-unit fraction >= ``dead_fraction``, unless its whole
        gradient is zero *and* a layer nearer the output is vanishing (float32 underflow of a
        vanishing gradient: then ``vanishing``).
      - ``vanishing``: a plain kernel's norm < ``vanishing_norm`` or a scale-invariant kernel's
        ``||g||/||W||`` < ``vanishing_step``, or the block's signal < ``vanishing_ratio`` x the
        largest signal of its family among blocks that are not exploding.
    * Embeddings: ``||g||/||W||`` over the rows the batch touched < ``vanishing_step`` is
      ``vanishing``; they are not compared along depth.
    * Ungated recurrent layers with a measured time profile (``context["time_profiles"]``):
      the gradient reaching the first timestep < ``vanishing_ratio`` x the largest one is
      ``vanishing`` (through time; Bengio, Simard & Frasconi 1994); > ``exploding_ratio`` x the
      last step's is ``exploding``. Gated cells (LSTM, GRU) learn their time scale through their
      gates (Hochreiter & Schmidhuber 1997), so only growth through time is a verdict for them.

    ``credit`` (used by :func:`health_score`): 1 for healthy; 0 for nonfinite; for vanishing and
    exploding ``0.5 * max(0, 1 - decades_beyond / score_decades)``, where ``decades_beyond`` is
    how many powers of ten the evidence lies past its threshold; for dead ``0.5 * (1 - dead
    fraction)``.

    Returns:
        The layer table with the new columns, of the same kind as ``layers``.
    """
    return like(layers, _classify(as_table(layers), thresholds, context or {}))


def _classify(out: Table, t: Thresholds, ctx: dict[str, Any]) -> Table:
    if "role" not in out or "block" not in out:
        out = _annotate(out if "relative_grad" in out else _with_kernel_columns(out), ctx)
    n = len(out)
    connected = np.asarray(out["connected"], dtype=bool)
    norms = np.asarray(out["grad_norm"], dtype=np.float64)
    rel = np.asarray(out["relative_grad"], dtype=np.float64)
    roles = list(out["role"])
    blocks = list(out["block"])
    bad = (np.asarray(out["nonfinite_count"]) > 0) | ~np.isfinite(norms)
    ok = connected & ~bad
    status = ["healthy"] * n
    decades = [0.0] * n
    signal = [float("nan")] * n
    rule = [ROLES.get(r, r) for r in roles]
    k_grad = np.asarray(out["kernel_grad_norm"], dtype=np.float64)
    k_weight = np.asarray(out["kernel_weight_norm"], dtype=np.float64)
    dead_fraction = np.asarray(out["dead_unit_fraction"], dtype=np.float64)
    # Each layer's own evidence against the absolute limits, for all layers at once.
    over_norm = _decades_array(norms, t.exploding_norm)
    under_norm = _decades_array(t.vanishing_norm, norms)
    under_step = _decades_array(t.vanishing_step, rel)
    block_over: dict[tuple[str, str], float] = {}
    block_under: dict[tuple[str, str], float] = {}
    block_signal: dict[tuple[str, str], float] = {}
    for family in ("norm", "relative"):
        members = [i for i in range(n) if ok[i] and _DEPTH_FAMILY.get(roles[i]) == family]
        if not members:
            continue
        sig = _block_signals(members, blocks, family, norms, k_grad, k_weight)
        finite = [b for b in sig if np.isfinite(sig[b])]
        if not finite:
            continue
        last = sig[finite[-1]]
        hot = {blocks[i] for i in members if family == "norm" and norms[i] > t.exploding_norm}
        for b, value in sig.items():
            block_signal[(family, b)] = value
            block_over[(family, b)] = _decades(value, t.exploding_ratio * last)
        # "Vanishing relative to the largest" ignores exploding blocks: one exploding block
        # does not make the healthy rest vanish.
        calm = [sig[b] for b in finite if block_over[(family, b)] == 0 and b not in hot]
        top = max(calm) if calm else float("nan")
        for b, value in sig.items():
            block_under[(family, b)] = _decades(t.vanishing_ratio * top, value)
    for i in range(n - 1, -1, -1):  # output to input: the underflow rule looks downstream
        if not connected[i]:
            status[i] = "unused"
            continue
        if bad[i]:
            status[i] = "nonfinite"
            continue
        role = roles[i]
        family = _DEPTH_FAMILY.get(role)
        if role == "embedding":
            signal[i] = rel[i]
            under = under_step[i]
            if under > 0:
                status[i], decades[i] = "vanishing", under
            continue
        if family is None:
            continue
        key = (family, blocks[i])
        signal[i] = block_signal.get(key, float("nan"))
        over = block_over.get(key, 0.0)
        if family == "norm":
            over = max(over, over_norm[i])
        if over > 0:
            status[i], decades[i] = "exploding", over
            continue
        under = block_under.get(key, 0.0)
        under = max(under, under_norm[i] if family == "norm" else under_step[i])
        if dead_fraction[i] >= t.dead_fraction and not (
            norms[i] == 0.0 and "vanishing" in status[i + 1:]
        ):
            status[i] = "dead"
            continue
        if under > 0:
            status[i], decades[i] = "vanishing", under
    through = [False] * n
    for i, name in enumerate(out["layer"]):
        prof = (ctx.get("time_profiles") or {}).get(name)
        if not prof or not prof.get("measured") or status[i] in ("unused", "nonfinite"):
            continue
        grow = _decades(prof.get("first_to_last") or float("nan"), t.exploding_ratio)
        shrink = _decades(t.vanishing_ratio, prof.get("first_to_max") or float("nan"))
        if grow > 0 and SEVERITY["exploding"] > SEVERITY.get(status[i], 0):
            status[i], decades[i], through[i] = "exploding", grow, True
        elif shrink > 0 and not prof.get("gated") and status[i] == "healthy":
            status[i], decades[i], through[i] = "vanishing", shrink, True
        if through[i]:
            rule[i] = "recurrent cell: judged through time (gradient reaching each timestep)"
    return out.with_columns(
        status=status,
        decades_beyond=np.array([float(d) for d in decades]),
        signal=np.asarray(signal, dtype=np.float64),
        through_time=np.asarray(through, dtype=bool),
        rule=rule,
        credit=np.array([_credit(s, d, f, t) for s, d, f in
                         zip(status, decades, dead_fraction, strict=True)], dtype=np.float64))


def _with_kernel_columns(layers: Table) -> Table:
    extra: dict[str, np.ndarray] = {}
    for col, src in (("kernel_grad_norm", "grad_norm"), ("kernel_weight_norm", "weight_norm")):
        if col not in layers:
            extra[col] = layers[src]
    out = layers.with_columns(**extra)
    if "relative_grad" not in out:
        w = np.asarray(out["kernel_weight_norm"], dtype=np.float64)
        g = np.asarray(out["kernel_grad_norm"], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out.with_columns(relative_grad=np.where(w > 0, g / np.where(w > 0, w, 1.0),
                                                          np.nan))
    return out


def _decades_array(big: Any, small: Any) -> np.ndarray:
    """:func:`_decades` element by element (arrays or scalars, broadcast)."""
    big, small = np.broadcast_arrays(np.asarray(big, dtype=np.float64),
                                     np.asarray(small, dtype=np.float64))
    beyond = np.isfinite(big) & np.isfinite(small) & (big > small)
    out = np.zeros(big.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[beyond] = np.where(small[beyond] <= 0.0, np.inf,
                               np.log10(big[beyond] / small[beyond]))
    return out


def _decades(big: float, small: float) -> float:
    """log10(big / small) when big > small, else 0; infinite when small is 0 and big is not."""
    if not (math.isfinite(big) and math.isfinite(small)) or big <= small:
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


def overall_status(layers: pd.DataFrame | Table) -> str:
    """The most severe layer status (``healthy`` when every used layer is healthy)."""
    found = [s for s in as_table(layers)["status"] if s in SEVERITY]
    return max(found, key=SEVERITY.__getitem__) if found else "healthy"


def health_score(layers: pd.DataFrame | Table) -> float:
    """Health score 0-100: ``100 * mean(credit)`` over the layers that receive a gradient.

    A network whose every layer is healthy scores 100; each unhealthy layer contributes at most
    half credit, less the further it is past its threshold (see :func:`classify_layers`); any
    non-finite gradient caps the score at 50 because one NaN update destroys the whole model.
    The score measures gradient health, not accuracy (:data:`SCORE_MEANING`).
    """
    table = as_table(layers)
    status = table["status"]
    used = status != "unused"
    if not used.any():
        return 0.0
    score = 100.0 * float(np.mean(np.asarray(table["credit"], dtype=np.float64)[used]))
    if (status == "nonfinite").any():
        score = min(score, 50.0)
    return round(score, 1)


def _names(names: Any, limit: int = 4) -> str:
    names = list(names["layer"]) if isinstance(names, (pd.DataFrame, Table)) else list(names)
    if len(names) <= limit:
        return ", ".join(f"'{n}'" for n in names)
    return f"'{names[0]}' ... '{names[-1]}' ({len(names)} layers)"


def _depth_vanishing_finding(used: Table, van: Table, t: Thresholds) -> str:
    """A sentence that shows the decay: the weakest block against the strongest of its family."""
    role = van["role"][0] if "role" in van else "kernel"
    family = _DEPTH_FAMILY.get(role, "norm")
    same = used.take([_DEPTH_FAMILY.get(r) == family for r in used["role"]])
    same = same.take(same["status"] != "exploding")
    blocks = list(dict.fromkeys(same["block"]))
    what = "gradient norm" if family == "norm" else "gradient-to-weight ratio ||g||/||W||"
    van_signal = np.asarray(van["signal"], dtype=np.float64)
    same_signal = np.asarray(same["signal"], dtype=np.float64)
    if not (np.isfinite(van_signal).any() and (same_signal > 0).any()):
        # Nothing to compare with: every layer of the family has a zero (or no) signal.
        limit = t.vanishing_norm if family == "norm" else t.vanishing_step
        return (f"Gradients vanish in {_names(van)}: no layer judged by its {what} gets more "
                f"than {np.nanmax(same_signal, initial=0.0):.3g}, below the absolute limit of "
                f"{limit:g}.")
    weakest = van.row(int(np.nanargmin(van_signal)))
    strongest = same.row(int(np.nanargmax(same_signal)))
    ratio = float(weakest["signal"]) / float(strongest["signal"])
    steps = abs(blocks.index(strongest["block"]) - blocks.index(weakest["block"])) or 1
    per = ratio ** (1.0 / steps) if ratio > 0 else 0.0
    toward = "input" if weakest["position"] < strongest["position"] else "output"
    where = (f"block '{weakest['block']}'" if weakest["block"] != weakest["layer"]
             else f"'{weakest['layer']}'")
    top = (f"block '{strongest['block']}'" if strongest["block"] != strongest["layer"]
           else f"'{strongest['layer']}'")
    return (f"Gradients vanish toward the {toward} in {_names(van)}: the {what} of {where} is "
            f"{float(weakest['signal']):.3g}, {ratio:.2g} times that of {top} "
            f"({float(strongest['signal']):.3g}) {steps} block(s) away, a decay of about "
            f"x{per:.3g} per block (limit: {t.vanishing_ratio:g} of the largest).")


def _time_findings(used: Table, t: Thresholds, ctx: dict[str, Any]) -> list[str]:
    out = []
    for name, prof in (ctx.get("time_profiles") or {}).items():
        row = used.take(used["layer"] == name)
        label = prof.get("layer", name)
        if not prof.get("measured"):
            out.append(f"The gradient through time of '{label}' was not measured: "
                       f"{prof.get('why', 'unknown reason')}.")
            continue
        length = int(prof["length"])
        decay = float(prof["decay_per_step"])
        horizon = memory_horizon(decay, t.vanishing_ratio)
        first_max = float(prof["first_to_max"])
        cell = prof.get("cell", "recurrent cell")
        through = bool(len(row) and row["through_time"][0])
        status = row["status"][0] if len(row) else "healthy"
        if through and status == "vanishing":
            lost = max(0, length - int(math.floor(horizon)))
            out.append(
                f"Gradients vanish through time in '{label}' ({cell}): the gradient reaching "
                f"timestep 1 is {first_max:.2g} times the largest one over the {length} steps, "
                f"shrinking by about x{decay:.3g} per step back in time; it falls below "
                f"{t.vanishing_ratio:g} after about {horizon:.0f} steps, so the first {lost} "
                "timesteps barely influence learning (parameter gradients sum over time and "
                "hide this).")
        elif through and status == "exploding":
            out.append(
                f"Gradients explode through time in '{label}' ({cell}): the first timestep "
                f"gets {float(prof['first_to_last']):.3g} times the last one's gradient, "
                f"growing by about x{1 / decay:.3g} per step back in time.")
        elif prof.get("gated") and horizon < length:
            out.append(
                f"'{label}' ({cell}): at initialization the gradient through time shrinks by "
                f"about x{decay:.3g} per step (first timestep: {first_max:.2g} of the largest, "
                f"a {t.vanishing_ratio:g} drop after about {horizon:.0f} of {length} steps). "
                "Not a verdict: the gates learn how long to remember (Hochreiter & "
                "Schmidhuber 1997; Cho et al. 2014); for dependencies much longer than that, "
                "chrono initialization of the gate biases sets a longer time scale (Tallec & "
                "Ollivier 2018).")
        else:
            out.append(
                f"'{label}' ({cell}): the gradient reaches every one of the {length} timesteps "
                f"(first timestep: {first_max:.2g} of the largest, x{decay:.3g} per step).")
    return out


def _relative_family(rows: Table) -> np.ndarray:
    """Which rows are judged by ``||g|| / ||W||`` (kernels followed by normalization)."""
    if "role" not in rows:
        return np.zeros(len(rows), dtype=bool)
    return np.array([_DEPTH_FAMILY.get(r) == "relative" for r in rows["role"]], dtype=bool)


def _relative_exploding_finding(used: Table, part: Table, t: Thresholds) -> str:
    """The exploding finding of kernels followed by normalization: they were judged by their
    blocks' ``||g|| / ||W||`` against the last such block, so that is what it reports."""
    signals = np.asarray(used["signal"], dtype=np.float64)[_relative_family(used)]
    finite = signals[np.isfinite(signals)]
    last = float(finite[-1]) if finite.size else float("nan")
    top = part.row(int(np.nanargmax(np.asarray(part["signal"], dtype=float))))
    return (f"Gradients explode in {_names(part)} (kernels followed by normalization, judged by "
            f"||g||/||W||): the ratio is {top['signal']:.3g} in '{top['layer']}', "
            f"{top['signal'] / last:.3g}x that of the last such block ({last:.3g}), above the "
            f"limit of {t.exploding_ratio:.3g}x. Normalization without a residual path can make "
            "gradients grow toward the input at initialization (Yang et al. 2019).")


def _not_judged_finding(used: Table, ctx: dict[str, Any]) -> str | None:
    if "role" not in used:
        return None
    names, n = np.unique(np.asarray(used["role"]).astype(str), return_counts=True)
    counts = dict(zip(names.tolist(), n.tolist(), strict=True))
    parts = []
    if counts.get("attention_qk"):
        parts.append(f"{counts['attention_qk']} attention query/key projection(s) (their "
                     "gradients are small at initialization because the softmax starts "
                     "near-uniform; Xiong et al. 2020)")
    if counts.get("layer_scaled"):
        parts.append(f"{counts['layer_scaled']} layer(s) inside residual branches scaled by a "
                     "LayerScale (their gradients are that small learnable scale times the "
                     "residual stream's; Touvron et al. 2021)")
    if counts.get("normalization"):
        parts.append(f"{counts['normalization']} normalization layer(s)")
    if counts.get("vector"):
        parts.append(f"{counts['vector']} layer(s) with only vectors")
    notes = []
    if parts:
        notes.append("Not read as depth evidence on their own: " + "; ".join(parts) + ".")
    if counts.get("scale_invariant"):
        notes.append(f"{counts['scale_invariant']} kernel(s) followed by normalization are "
                     "judged by their gradient-to-weight ratio ||g||/||W||, not by their "
                     "gradient norm, which scales as 1/||W|| (van Laarhoven 2017).")
    rows = ctx.get("embedding_rows") or {}
    for name, info in rows.items():
        notes.append(f"Embedding '{name}' is judged on the {info['rows']} of {info['of']} rows "
                     f"this batch touched ({info['source']}).")
    return " ".join(notes) if notes else None


def findings(layers: pd.DataFrame | Table, thresholds: Thresholds, context: dict[str, Any]
             ) -> list[str]:
    """Plain-English sentences describing what the layer table shows, with layers and numbers.

    A "vanish" finding shows the decay it describes (a ratio below 1 and the factor per block or
    per timestep); layers that are not depth evidence are named as such.
    """
    t = thresholds
    ctx = context or {}
    layers = as_table(layers)
    status = layers["status"]
    out: list[str] = []
    if (status == "unused").all():
        return ["No layer received a gradient: the loss does not depend on any trainable weight."]
    present = set(status)
    used = layers.take(status != "unused") if "unused" in present else layers
    status = used["status"]
    through = (np.asarray(used["through_time"], dtype=bool) if "through_time" in used
               else np.zeros(len(used), dtype=bool))
    last_norm = float(used["grad_norm"][-1])
    if "unused" in present:
        out.append(f"{_names(layers.take(layers['status'] == 'unused'))} receive no gradient at "
                   "all: they are not connected to the loss (frozen path or unused branch).")
    if "nonfinite" in present:
        bad = used.take(status == "nonfinite")
        out.append(f"{int(np.sum(bad['nonfinite_count']))} gradient entries are NaN or inf in "
                   f"{_names(bad)}; a single such update turns the weights into NaN.")
    exploding_mask = (status == "exploding") & ~through
    if exploding_mask.any():
        exploding = used.take(exploding_mask)
        relative = _relative_family(exploding)
        if (~relative).any():
            by_norm = exploding.take(~relative)
            top = by_norm.row(int(np.nanargmax(np.asarray(by_norm["grad_norm"], dtype=float))))
            out.append(
                f"Gradients explode in {_names(by_norm)}: the largest norm is "
                f"{top['grad_norm']:.3g} in '{top['layer']}', above the limit of "
                f"{t.exploding_norm:.3g} (or {t.exploding_ratio:.3g}x the last layer's, "
                f"{last_norm:.3g})."
            )
        if relative.any():
            out.append(_relative_exploding_finding(used, exploding.take(relative), t))
    if "dead" in present:
        dead = used.take(status == "dead")
        worst = dead.row(int(np.nanargmax(np.asarray(dead["dead_unit_fraction"], dtype=float))))
        out.append(
            f"{_names(dead)} have mostly dead units: in '{worst['layer']}' "
            f"{100 * worst['dead_unit_fraction']:.0f}% of units got an exactly zero gradient on "
            f"this batch (threshold {100 * t.dead_fraction:.0f}%)."
        )
    vanishing_mask = (status == "vanishing") & ~through
    if vanishing_mask.any():
        vanishing = used.take(vanishing_mask)
        is_emb = (vanishing["role"] == "embedding" if "role" in vanishing
                  else np.zeros(len(vanishing), dtype=bool))
        emb = vanishing.take(is_emb)
        depth = vanishing.take(~is_emb)
        if len(depth):
            for family in dict.fromkeys(_DEPTH_FAMILY.get(r, "norm") for r in depth["role"]):
                part = depth.take([_DEPTH_FAMILY.get(r, "norm") == family for r in depth["role"]])
                out.append(_depth_vanishing_finding(used, part, t))
        for name, signal in zip(emb["layer"], emb["signal"], strict=True):
            out.append(f"Embedding '{name}' gets a gradient of {signal:.3g} of its touched rows' "
                       f"norm, below {t.vanishing_step:g}: those rows cannot learn.")
        zeros = vanishing.take(vanishing["grad_norm"] == 0.0)
        if len(zeros):
            out.append(f"In {_names(zeros)} the gradient underflowed to exactly 0.0 in float32: "
                       "these layers cannot learn at all.")
    if ctx.get("time_profiles"):
        out += _time_findings(used, t, ctx)
    if present <= {"healthy", "unused"}:
        roles = used["role"] if "role" in used else np.full(len(used), "kernel")
        signal = np.asarray(used["signal"] if "signal" in used else used["grad_norm"],
                            dtype=np.float64)
        parts = []
        for family, what in (("norm", "gradient norms"), ("relative", "||g||/||W|| ratios")):
            mask = np.array([_DEPTH_FAMILY.get(r) == family for r in roles], dtype=bool)
            values = signal[mask]
            values = values[np.isfinite(values) & (values > 0)]
            if values.size:
                parts.append(f"{int(mask.sum())} layers by {what} from {values.min():.3g} to "
                             f"{values.max():.3g} (spread {values.max() / values.min():.3g}x)")
        if parts:
            n_judged = sum(_DEPTH_FAMILY.get(r) is not None for r in roles)
            out.append(f"All {n_judged} layers judged along depth have healthy gradients: " +
                       "; ".join(parts) +
                       f" (limit {1 / t.vanishing_ratio:.3g}x between blocks); no dead layers, "
                       "no NaN/inf.")
        else:
            out.append("No layer is depth evidence and none has NaN/inf gradients.")
    note = _not_judged_finding(used, ctx)
    if note:
        out.append(note)
    return out


# --------------------------------------------------------------------------------------------
# Recommendations: what the model does not have yet, for the layers concerned, with the paper.
# --------------------------------------------------------------------------------------------

def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(name)).lower()


def _optimizer_base(name: str | None) -> str | None:
    if not name:
        return None
    inner = re.search(r"\((\w+)\)", name)
    return inner.group(1) if inner else name


def _optimizer_rec(ctx: dict[str, Any], layers: tuple[str, ...], why: str
                   ) -> Recommendation | None:
    name = _optimizer_base(ctx.get("optimizer"))
    if name in ADAPTIVE_OPTIMIZERS:
        return None
    now = ("no optimizer is compiled yet: compile with Adam" if name is None
           else f"the model is compiled with {name}: use Adam instead")
    return Recommendation(
        "optimizer", "Use Adam (per-parameter step sizes)" + (" when compiling" if name is None
                                                              else f" instead of {name}"),
        f"{now}; {why}", layers, "Kingma & Ba 2015, Adam", {"optimizer": "adam"})


def _lower_lr(lr: Any, compiled: bool) -> str:
    if isinstance(lr, float):
        return f"Lower the learning rate by 10x (now {lr:.3g})"
    if compiled:
        return "Lower the learning rate by 10x"
    return "No optimizer is compiled yet: when compiling, use a learning rate 10x below the usual"


def _init_mismatches(names: list[str], acts: dict[str, str], inits: dict[str, str]
                     ) -> dict[str, list[str]]:
    """matched initializer -> layers whose initializer differs from it (knowledge table)."""
    out: dict[str, list[str]] = {}
    for n in names:
        if n not in inits:
            continue
        want = matched_initializer(acts.get(n, "linear"))
        if _snake(inits[n]) != want:
            out.setdefault(want, []).append(n)
    return out


def recommendations(layers: pd.DataFrame | Table, thresholds: Thresholds,
                    context: dict[str, Any]
                    ) -> list[Recommendation]:
    """Concrete fixes tied to the statuses found, that the model does not already have.

    Each recommendation names the layers it concerns, says why with the measured numbers and
    cites the paper. Nothing the model already has is proposed: a normalization layer when it
    has one (nested ones count), residual connections when it has ``Add`` merges or custom
    layers whose ``call`` may hold them, an activation or initializer a layer already uses (the
    pairing comes from :mod:`gradhealth.core.knowledge`), Adam when an adaptive optimizer is
    compiled, clipping when the optimizer clips.

    ``context`` keys used (all optional): ``activations``, ``initializers``,
    ``recurrent_initializers``, ``has_normalization``, ``has_residual`` (True/False/None =
    unknown), ``depth``, ``optimizer``, ``learning_rate``, ``clipping``, ``time_profiles``.
    """
    ctx = context or {}
    layers = as_table(layers)
    used = layers.take(layers["status"] != "unused")
    status = used["status"]
    statuses = set(status)
    acts: dict[str, str] = ctx.get("activations", {})
    inits: dict[str, str] = ctx.get("initializers", {})
    depth = int(ctx.get("depth", len(used)))
    has_norm = bool(ctx.get("has_normalization", False))
    has_res = ctx.get("has_residual", False)
    lr = ctx.get("learning_rate")
    compiled = ctx.get("optimizer") is not None or lr is not None
    clipping = ctx.get("clipping")
    through = (np.asarray(used["through_time"], dtype=bool) if "through_time" in used
               else np.zeros(len(used), dtype=bool))
    recs: list[Recommendation] = []
    all_layers = tuple(used["layer"])

    def add(rec: Recommendation | None) -> None:
        if rec is not None and all(str(r) != str(rec) for r in recs):
            recs.append(rec)

    if "nonfinite" in statuses:
        bad = tuple(used["layer"][status == "nonfinite"])
        add(Recommendation(
            "data", "Check the inputs and the loss for NaN/inf (use from_logits=True losses "
            "instead of log(softmax)), and restore the last finite weights",
            "non-finite gradients start either in the data, in a numerically unstable loss or "
            "in weights already destroyed by a too-large step",
            bad, "Goodfellow, Bengio & Courville 2016, Deep Learning, sec. 4.1"))
        if not clipping:
            add(Recommendation(
                "clipping", "Train with gradhealth.GradientHealthMonitor(on_nonfinite='skip') "
                "and clip the global gradient norm to 1.0",
                "a skipped update keeps the weights finite while the cause is found",
                bad, "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs",
                {"clipping": "global_norm", "clip_value": 1.0}))
        if lr is not None:
            add(Recommendation(
                "learning_rate", f"Lower the learning rate (now {lr:.3g}) by 10x or more",
                "a step far larger than the weights overflows them to inf, then NaN",
                bad, "Bengio 2012, Practical recommendations for gradient-based training",
                {"learning_rate_factor": 0.1}))

    if "exploding" in statuses:
        ex = used.take(status == "exploding")
        ex_depth = used.take((status == "exploding") & ~through)
        names = tuple(ex["layer"])
        for want, bad_init in _init_mismatches(list(ex_depth["layer"]), acts, inits).items():
            current = sorted({inits[n] for n in bad_init})
            add(Recommendation(
                "initializer", f"Re-initialize the kernels of {_names(bad_init)} with {want} "
                f"instead of {', '.join(current)}",
                f"the largest layer gradient norm is {np.nanmax(ex['grad_norm']):.3g}; {want} is "
                f"the variance-preserving initializer for their activation, keeping each "
                "layer's gain near 1", tuple(bad_init), INITIALIZER_SOURCES[want],
                {"kernel_initializer": want}))
        if not clipping:
            add(Recommendation(
                "clipping", "Clip the global gradient norm (clipnorm=1.0 or gradhealth AutoClip)",
                "it bounds every update while the root cause is fixed; the optimizer clips "
                "nothing now", names,
                "Pascanu, Mikolov & Bengio 2013; Seetharaman et al. 2020 (AutoClip)",
                {"clipping": "global_norm", "clip_value": 1.0}))
        add(Recommendation(
            "learning_rate", _lower_lr(lr, compiled),
            "steps proportional to exploding gradients overshoot", names,
            "Bengio 2012, Practical recommendations for gradient-based training",
            {"learning_rate_factor": 0.1}))
        if not has_norm and len(ex_depth):
            add(Recommendation(
                "normalization", "Add LayerNormalization (BatchNormalization for CNNs) before "
                f"the hidden activations of {_names(ex_depth)}",
                "the model has no normalization layer; normalization resets each layer's "
                "scale, so gains cannot compound", tuple(ex_depth["layer"]),
                "Ba, Kiros & Hinton 2016, Layer Normalization; Ioffe & Szegedy 2015",
                {"normalization": "layer"}))

    if "dead" in statuses:
        dd = used.take(status == "dead")
        zero_side = [n for n in dd["layer"] if acts.get(n) in ("relu", "relu6")]
        if zero_side:
            add(Recommendation(
                "activation", f"Replace ReLU with LeakyReLU, ELU or GELU in {_names(zero_side)}",
                f"up to {100 * np.nanmax(dd['dead_unit_fraction']):.0f}% of units get an exactly "
                "zero gradient for every example; a non-zero negative slope lets them recover",
                tuple(zero_side), "Maas et al. 2013 (Leaky ReLU); Clevert et al. 2016 (ELU)",
                {"activation": "leaky_relu"}))
        mismatched = _init_mismatches(list(dd["layer"]), acts, inits)
        for want, bad_init in mismatched.items():
            add(Recommendation(
                "initializer", f"Re-initialize {_names(bad_init)} with {want}",
                "too-negative pre-activations at initialization kill rectifier units",
                tuple(bad_init), "Lu et al. 2019, Dying ReLU and Initialization",
                {"kernel_initializer": want}))
        if not mismatched:
            add(Recommendation(
                "data", f"Check the biases and the input scale of {_names(dd)}: reset biases "
                "to zero and standardize the inputs",
                "their kernels already use the initializer matched to the activation, so the "
                "units die from a negative bias or shifted inputs", tuple(dd["layer"]),
                "Lu et al. 2019, Dying ReLU and Initialization"))
        add(Recommendation(
            "learning_rate", _lower_lr(lr, compiled),
            "a too-large step pushes biases negative and kills units permanently",
            tuple(dd["layer"]), "Lu et al. 2019", {"learning_rate_factor": 0.1}))

    if "vanishing" in statuses:
        van_time = used.take((status == "vanishing") & through)
        van = used.take((status == "vanishing") & ~through)
        for name in van_time["layer"]:
            prof = (ctx.get("time_profiles") or {}).get(name, {})
            label = prof.get("layer", name)
            add(Recommendation(
                "architecture", f"Replace the {prof.get('cell', 'RNNCell')[:-4]} layer "
                f"'{label}' with an LSTM or GRU",
                f"the gradient reaching its first timestep is {prof.get('first_to_max', 0):.2g} "
                f"of the largest (x{prof.get('decay_per_step', float('nan')):.3g} per step): an "
                "ungated recurrence multiplies one Jacobian per step, while a gated cell keeps "
                "an additive path through time", (name,),
                "Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1997 (LSTM); Cho et "
                "al. 2014 (GRU)", {"recurrent_cell": "lstm"}))
            rinit = (ctx.get("recurrent_initializers") or {}).get(name)
            if rinit is not None and _snake(rinit) != "orthogonal":
                add(Recommendation(
                    "initializer", f"Initialize the recurrent kernel of '{label}' orthogonally "
                    f"instead of {rinit}",
                    "orthogonal matrices have every singular value 1, so the linear part of the "
                    "recurrence neither shrinks nor grows the gradient", (name,),
                    "Saxe, McClelland & Ganguli 2014", {"recurrent_initializer": "orthogonal"}))
        if len(van):
            depth_layers = [n for n, r in zip(used["layer"], used.get("role", ()), strict=False)
                            if _DEPTH_FAMILY.get(r) is not None] or list(all_layers)
            saturating = [n for n in depth_layers if acts.get(n) in SATURATING_ACTIVATIONS]
            if saturating:
                names = sorted({acts[n] for n in saturating})
                slope = max((facts(a).max_derivative if facts(a) else 1.0) for a in names)
                add(Recommendation(
                    "activation", f"Replace {'/'.join(names)} with ReLU (or GELU/Swish) in "
                    f"{len(saturating)} hidden layer(s): {_names(saturating)}",
                    f"the derivative of {'/'.join(names)} is at most {slope:g} and near 0 when "
                    "saturated, so the gradient shrinks at every layer; ReLU's derivative is "
                    "exactly 1 where active",
                    tuple(saturating), "Glorot, Bordes & Bengio 2011, Deep Sparse Rectifier "
                    "Networks", {"activation": "relu"}))
                want = matched_initializer("relu")
                not_he = [n for n in saturating if _snake(inits.get(n, "")) != want]
                if not_he:
                    add(Recommendation(
                        "initializer", f"Use {want} initialization with the ReLU-family "
                        f"activation in {_names(not_he)}",
                        "it keeps forward and backward variance constant through ReLU layers",
                        tuple(not_he), INITIALIZER_SOURCES[want], {"kernel_initializer": want}))
            else:
                mismatched = _init_mismatches(list(van["layer"]), acts, inits)
                for want, bad_init in mismatched.items():
                    add(Recommendation(
                        "initializer", f"Re-initialize {_names(bad_init)} with {want}",
                        "it is the variance-preserving initializer for their activation; the "
                        "layers' gains multiply to a vanishing product now", tuple(bad_init),
                        INITIALIZER_SOURCES[want], {"kernel_initializer": want}))
                if not mismatched:
                    add(Recommendation(
                        "initializer", f"Calibrate {_names(van)} with gradhealth.lsuv_init",
                        "their initializers already match their activations, yet the gains "
                        "multiply to a vanishing product: a data-driven scale fixes it",
                        tuple(van["layer"]), "Mishkin & Matas 2016, All you need is a good init"))
            if not has_norm:
                add(Recommendation(
                    "normalization", "Add LayerNormalization (BatchNormalization for CNNs) "
                    f"before the hidden activations of {_names(van)}",
                    "the model has no normalization layer; normalization keeps "
                    "pre-activations in the non-saturated range at every depth",
                    tuple(van["layer"]),
                    "Ba, Kiros & Hinton 2016, Layer Normalization; Ioffe & Szegedy 2015",
                    {"normalization": "layer"}))
            if depth >= 10 and has_res is False:
                add(Recommendation(
                    "residual", f"Add residual (skip) connections around the hidden layers "
                    f"({depth} weighted layers deep, no Add merge in the model)",
                    "an identity path carries the gradient past every layer unchanged",
                    tuple(van["layer"]), "He et al. 2016, Deep Residual Learning",
                    {"residual": True}))
            add(_optimizer_rec(ctx, tuple(van["layer"]), "per-parameter step sizes rescale "
                               "small gradients, partly compensating the imbalance between "
                               "layers"))
    return recs
