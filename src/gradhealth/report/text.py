"""Markdown rendering of a health report."""

from __future__ import annotations

from typing import Any

from gradhealth.core.diagnosis import SCORE_MEANING

__all__ = ["LAYER_COLUMNS", "PROFILE_POINTS", "layer_table_markdown", "report_markdown",
           "time_profile_markdown"]

LAYER_COLUMNS: tuple[str, ...] = ("position", "layer", "block", "role", "grad_norm",
                                  "relative_grad", "dead_unit_fraction", "nonfinite_count",
                                  "status")
#: Timesteps listed per recurrent layer in the Markdown profile (evenly spread, ends included).
PROFILE_POINTS: int = 11


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


def time_profile_markdown(context: dict[str, Any]) -> list[str]:
    """Markdown lines: per recurrent layer, the gradient reaching evenly spread timesteps."""
    lines: list[str] = []
    for name, prof in (context.get("time_profiles") or {}).items():
        if not prof.get("measured"):
            lines += [f"- '{name}': not measured ({prof.get('why', '')})"]
            continue
        values = prof["profile"]
        n = len(values)
        picks = sorted({round(i * (n - 1) / (PROFILE_POINTS - 1)) for i in range(PROFILE_POINTS)})
        lines += [
            f"**{prof.get('layer', name)}** ({prof.get('cell', '')}, {n} steps): "
            f"x{prof['decay_per_step']:.3g} per step back in time; first timestep gets "
            f"{prof['first_to_max']:.3g} of the largest.",
            "",
            "| timestep | " + " | ".join(str(i + 1) for i in picks) + " |",
            "|---|" + "---|" * len(picks),
            "| dL/dx_t | " + " | ".join(_fmt(float(values[i] or 0.0)) for i in picks) + " |",
            "",
        ]
    return lines


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
        f"_{SCORE_MEANING}_",
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
    profile = time_profile_markdown(ctx)
    if profile:
        parts += ["## Gradient through time", "", *profile]
    return "\n".join(parts)
