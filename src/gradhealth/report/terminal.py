"""Terminal rendering of health reports with rich: pure functions of results -> rich renderables.

Nothing here computes a statistic: the tables show what :func:`gradhealth.diagnosis` measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from gradhealth.core.diagnosis import SCORE_MEANING

__all__ = ["STATUS_STYLES", "findings_text", "layer_table", "report_renderable", "status_text",
           "summary_table"]

#: rich colour of each layer/overall status (the terminal twin of ``plots.STATUS_COLORS``).
STATUS_STYLES: dict[str, str] = {
    "healthy": "bold green",
    "vanishing": "bold blue",
    "dead": "bold yellow",
    "exploding": "bold red",
    "nonfinite": "bold magenta",
    "unused": "dim",
}


def status_text(status: str) -> Text:
    """The status word in its colour."""
    return Text(str(status), style=STATUS_STYLES.get(str(status), "bold"))


def _num(value: Any) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def layer_table(report: Any) -> Table:
    """One row per layer with weights: grad norm, mean |g|, dead fraction, non-finite, status.

    Args:
        report: A :class:`~gradhealth.HealthReport`.

    Returns:
        A ``rich.table.Table`` titled with the model name, status and score.
    """
    ctx = report.context or {}
    title = Text.assemble(
        f"{ctx.get('model_name', 'model')}: ", status_text(report.status),
        f"  score {report.score:g}/100",
    )
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("grad norm", justify="right")
    table.add_column("mean |g|", justify="right")
    table.add_column("dead", justify="right")
    table.add_column("non-finite", justify="right")
    table.add_column("status")
    table.add_column("read as")
    for _, row in report.layers.iterrows():
        table.add_row(
            str(int(row["position"])), Text(str(row["layer"])), _num(row["grad_norm"]),
            _num(row["grad_mean_abs"]), f"{float(row['dead_unit_fraction']):.2f}",
            str(int(row["nonfinite_count"])), status_text(row["status"]),
            Text(str(row.get("role", "")), style="dim"),
        )
    return table


def findings_text(report: Any) -> Group:
    """Findings as a bulleted list, then recommendations numbered with their references."""
    lines: list[Text] = [Text(SCORE_MEANING, style="italic"), Text("Findings", style="bold")]
    lines += [Text(f"  - {f}") for f in report.findings] or [Text("  - none")]
    lines.append(Text("Recommendations", style="bold"))
    if report.recommendations:
        for i, r in enumerate(report.recommendations, 1):
            lines.append(Text.assemble(f"  {i}. ", (r.action, "bold"), f" - {r.reason} ",
                                       (f"({r.reference})", "italic")))
    else:
        lines.append(Text("  none: keep training."))
    return Group(*lines)


def report_renderable(report: Any) -> Group:
    """The whole report for a terminal: layer table, findings, recommendations."""
    return Group(layer_table(report), findings_text(report))


def summary_table(reports: Mapping[str, Any], expected: Mapping[str, str] | None = None) -> Table:
    """Several reports side by side: one row per network.

    Args:
        reports: Mapping label -> HealthReport, in display order.
        expected: Optional mapping label -> the status the network should get; adds a column
            that says whether the diagnosis matched.

    Returns:
        A ``rich.table.Table`` with network, status, score, first/last layer gradient norms and
        the key (first) finding.
    """
    table = Table(title="Gradient checkups compared", title_justify="left")
    table.add_column("network")
    table.add_column("status")
    table.add_column("score", justify="right")
    table.add_column("first layer |g|", justify="right")
    table.add_column("last layer |g|", justify="right")
    if expected is not None:
        table.add_column("expected")
    table.add_column("key finding", ratio=1)
    for label, rep in reports.items():
        norms = rep.layers["grad_norm"]
        cells: list[Any] = [Text(label), status_text(rep.status), f"{rep.score:g}",
                            _num(norms.iloc[0]), _num(norms.iloc[-1])]
        if expected is not None:
            want = expected.get(label)
            ok = want == rep.status
            cells.append(Text(f"{want} {'ok' if ok else 'MISMATCH'}",
                              style="green" if ok else "bold red"))
        cells.append(Text(rep.findings[0] if rep.findings else "no problem found"))
        table.add_row(*cells)
    return table
