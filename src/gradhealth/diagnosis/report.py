"""The result of a checkup: :class:`HealthReport`, and :func:`diagnose` that builds one.

Plain Python, NumPy and pandas: a report can be built, saved and re-diagnosed from a statistics
table without Keras (e.g. from a saved JSON).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from gradhealth._internal.io import atomic_write_text
from gradhealth.core import diagnosis
from gradhealth.core.diagnosis import Recommendation
from gradhealth.core.table import Table, as_table
from gradhealth.core.thresholds import Thresholds
from gradhealth.report.html import report_fragment, report_html
from gradhealth.report.plots import plot_gradient_flow, plot_time_profiles
from gradhealth.report.text import report_markdown

__all__ = ["HealthReport", "diagnose"]


class HealthReport:
    """The result of :func:`checkup`.

    Attributes:
        status: ``"healthy"``, ``"vanishing"``, ``"exploding"``, ``"dead"`` or ``"nonfinite"``.
        score: Health score 0-100 (see :func:`gradhealth.core.diagnosis.health_score`): how
            well the gradient reaches every layer on this batch, not accuracy
            (:data:`gradhealth.core.diagnosis.SCORE_MEANING`).
        layers: One row per layer with weights: ``position, layer, n_params, grad_norm, ...,
            status, decades_beyond, credit`` (a DataFrame, built when first read).
        variables: Per-variable statistics (as :func:`gradient_stats`; a DataFrame, built when
            first read).
        findings: Plain-English sentences naming layers and numbers.
        recommendations: Concrete fixes tied to the findings.
        loss: The batch loss.
        thresholds: The thresholds used.
        context: Facts about the model (roles, blocks, activations, initializers,
            normalization, residual, optimizer, embedding rows, ``time_profiles``: the gradient
            reaching each timestep of each recurrent layer).
    """

    def __init__(self, status: str, score: float, layers: pd.DataFrame | Table,
                 variables: pd.DataFrame | Table, findings: list[str],
                 recommendations: list[Recommendation], loss: float, thresholds: Thresholds,
                 context: dict[str, Any] | None = None) -> None:
        self.status = status
        self.score = score
        # The tables stay NumPy columns until read: most checkups (the monitor's, a treatment's
        # second opinion, a status check) never look at them, and a DataFrame costs ~0.5 ms.
        self._layers = layers
        self._variables = variables
        self.findings = findings
        self.recommendations = recommendations
        self.loss = loss
        self.thresholds = thresholds
        self.context = {} if context is None else context

    @property
    def layers(self) -> pd.DataFrame:
        """One row per layer with weights (see the class docstring)."""
        if isinstance(self._layers, Table):
            self._layers = self._layers.to_frame()
        return self._layers

    @property
    def variables(self) -> pd.DataFrame:
        """Per-variable statistics, as :func:`gradient_stats` returns them."""
        if isinstance(self._variables, Table):
            self._variables = self._variables.to_frame()
        return self._variables

    @property
    def score_meaning(self) -> str:
        """What the score measures: gradient health on the batch, not accuracy."""
        return diagnosis.SCORE_MEANING

    @property
    def time_profiles(self) -> dict[str, dict[str, Any]]:
        """Per recurrent layer: the gradient norm reaching each timestep and its decay rate."""
        return dict(self.context.get("time_profiles") or {})

    def plot_time(self, ax: Any = None) -> Any:
        """The gradient reaching each timestep of each recurrent layer (log scale)."""
        return plot_time_profiles(self, ax=ax)

    @property
    def healthy(self) -> bool:
        """Whether the overall status is ``"healthy"``."""
        return self.status == "healthy"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of the whole report (NaN/inf become None)."""
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]

        return {
            "status": self.status,
            "score": self.score,
            "loss": _plain(self.loss),
            "findings": list(self.findings),
            "recommendations": [r.to_dict() for r in self.recommendations],
            "layers": records(self.layers),
            "variables": records(self.variables),
            "thresholds": self.thresholds.to_dict(),
            "context": {k: _plain(v) for k, v in self.context.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (strict JSON: no NaN literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        """The report as Markdown: summary, layer table, findings, recommendations."""
        return report_markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML page with the gradient-flow plot embedded (no external files)."""
        return report_html(self)

    def _repr_html_(self) -> str:
        return report_fragment(self)

    def plot(self, ax: Any = None) -> Any:
        """The per-layer gradient-flow plot (log scale), coloured by status."""
        return plot_gradient_flow(self, ax=ax)

    def save(self, path: str) -> str:
        """Write the report atomically as ``.json``, ``.html`` or ``.md`` (by extension)."""
        text = {".json": self.to_json, ".html": self.to_html, ".md": self.to_markdown}
        suffix = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
        if suffix not in text:
            raise ValueError(
                f"Argument `path` must end in .json, .html or .md. Received: path={path!r}"
            )
        atomic_write_text(path, text[suffix]())
        return str(path)

    def __repr__(self) -> str:
        return (f"HealthReport(status={self.status!r}, score={self.score}, "
                f"layers={len(self._layers)}, findings={len(self.findings)}, "
                f"recommendations={len(self.recommendations)})")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def diagnose(variables: pd.DataFrame | Table, thresholds: Thresholds | dict | None = None,
             context: dict[str, Any] | None = None, loss: float = float("nan")) -> HealthReport:
    """Build a :class:`HealthReport` from a per-variable statistics table (no model needed).

    Useful to re-diagnose saved statistics with other thresholds.

    Args:
        variables: Per-variable statistics, as :func:`gradhealth.gradient_stats` returns them
            (or ``report.variables`` of an earlier report).
        thresholds: A :class:`Thresholds`, a dict of overrides, or None for the defaults.
        context: Facts about the model (``report.context``); None reads every layer with a
            matrix as a plain kernel.
        loss: The batch loss, if known.

    Returns:
        A :class:`HealthReport`.

    Raises:
        TypeError: ``variables`` is not a DataFrame (or Table) of statistics.
        ValueError: Invalid thresholds.

    Example:
        >>> strict = diagnose(report.variables, {"vanishing_ratio": 1e-2}, report.context)
    """
    t = Thresholds.coerce(thresholds)
    ctx = context or {}
    table = as_table(variables)
    layers = diagnosis.classify_layers(diagnosis.annotate_layers(diagnosis.aggregate_layers(
        table), ctx), t, ctx)
    return HealthReport(
        status=diagnosis.overall_status(layers),
        score=diagnosis.health_score(layers),
        layers=layers,
        variables=variables,
        findings=diagnosis.findings(layers, t, ctx),
        recommendations=diagnosis.recommendations(layers, t, ctx),
        loss=loss,
        thresholds=t,
        context=ctx,
    )
