"""Markdown rendering of a health report."""

from __future__ import annotations

from typing import Any

__all__ = ["LAYER_COLUMNS", "layer_table_markdown", "report_markdown"]

LAYER_COLUMNS: tuple[str, ...] = ("position", "layer", "grad_norm", "grad_mean_abs",
                                  "dead_unit_fraction", "nonfinite_count", "status")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def layer_table_markdown(layers: Any, columns: tuple[str, ...] = LAYER_COLUMNS) -> str:
    """A Markdown table of the chosen layer columns."""
    cols = [c for c in columns if c in layers.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in layers[cols].iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def report_markdown(report: Any) -> str:
    """The whole report as Markdown."""
    ctx = report.context or {}
    parts = [
        f"# Gradient checkup: {ctx.get('model_name', 'model')}",
        "",
        f"**Status:** {report.status}  ",
        f"**Score:** {report.score:g} / 100  ",
        f"**Loss on the batch:** {report.loss:.4g}  ",
        f"**Backend:** {ctx.get('backend', '?')}",
        "",
        "## Findings",
        *[f"- {f}" for f in report.findings],
        "",
        "## Recommendations",
        *([f"{i}. **{r.action}** — {r.reason} ({r.reference})"
           for i, r in enumerate(report.recommendations, 1)] or ["None: keep training."]),
        "",
        "## Layers",
        layer_table_markdown(report.layers),
        "",
    ]
    return "\n".join(parts)
