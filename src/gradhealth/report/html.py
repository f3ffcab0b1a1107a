"""Self-contained HTML rendering of a health report (plot embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from typing import Any

from gradhealth.core.diagnosis import SCORE_MEANING
from gradhealth.report.plots import (
    STATUS_COLORS,
    figure_png,
    plot_gradient_flow,
    plot_time_profiles,
)

__all__ = ["report_fragment", "report_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
.gh-badge{display:inline-block;padding:.2em .6em;border-radius:.4em;color:#fff;font-weight:600}
table.gh{border-collapse:collapse;font-size:13px} table.gh td,table.gh th{border:1px solid #ddd;
padding:2px 6px;text-align:right} table.gh td:nth-child(2){text-align:left}
"""


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#555")
    return f'<span class="gh-badge" style="background:{color}">{html.escape(status)}</span>'


_FIT = "max-width:100%;height:auto"
"""Inline, so the fragment fits in a notebook too: a deep network's figure is wider than a
narrow window, where it was cut off at the right edge (MobileNetV2's 105 layers at 1100 px)."""


def report_fragment(report: Any, plot: bool = True) -> str:
    """An HTML fragment (for notebooks): status, score, findings, recommendations, plot, table."""
    ctx = report.context or {}
    rows = []
    for _, r in report.layers.iterrows():
        color = STATUS_COLORS.get(r["status"], "#555")
        rows.append(
            f"<tr><td>{int(r['position'])}</td><td>{html.escape(str(r['layer']))}</td>"
            f"<td>{r['grad_norm']:.3g}</td><td>{r['grad_mean_abs']:.3g}</td>"
            f"<td>{r['dead_unit_fraction']:.2f}</td><td>{int(r['nonfinite_count'])}</td>"
            f"<td style='color:{color};font-weight:600'>{html.escape(str(r['status']))}</td>"
            f"<td style='text-align:left'>{html.escape(str(r.get('rule', '')))}</td></tr>"
        )
    img = ""
    if plot:
        png = base64.b64encode(figure_png(plot_gradient_flow(report))).decode("ascii")
        img = f'<img alt="gradient flow" style="{_FIT}" src="data:image/png;base64,{png}"/>'
        if any(p.get("measured") for p in (ctx.get("time_profiles") or {}).values()):
            png = base64.b64encode(figure_png(plot_time_profiles(report))).decode("ascii")
            img += ('<h4>Gradient through time</h4><img alt="gradient vs timestep" '
                    f'style="{_FIT}" src="data:image/png;base64,{png}"/>')
    findings = "".join(f"<li>{html.escape(f)}</li>" for f in report.findings)
    recs = "".join(
        f"<li><b>{html.escape(r.action)}</b> — {html.escape(r.reason)} "
        f"<i>({html.escape(r.reference)})</i></li>" for r in report.recommendations
    ) or "<li>None: keep training.</li>"
    return (
        f"<div class='gradhealth-report'><h3>Gradient checkup: "
        f"{html.escape(str(ctx.get('model_name', 'model')))} {_badge(report.status)} "
        f"score {report.score:g}/100</h3><p><i>{html.escape(SCORE_MEANING)}</i></p>"
        f"<p>loss on the batch {report.loss:.4g} · backend {html.escape(str(ctx.get('backend')))}"
        f"</p><h4>Findings</h4><ul>{findings}</ul><h4>Recommendations</h4><ol>{recs}</ol>{img}"
        "<details><summary>Per-layer table</summary><table class='gh'><tr><th>#</th><th>layer"
        "</th><th>grad norm</th><th>mean |g|</th><th>dead</th><th>non-finite</th><th>status"
        f"</th><th>read as</th></tr>{''.join(rows)}</table></details></div>"
    )


def report_html(report: Any) -> str:
    """A complete, self-contained HTML page for the report."""
    ctx = report.context or {}
    title = html.escape(f"gradhealth checkup: {ctx.get('model_name', 'model')}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>{report_fragment(report)}</body></html>"
    )
