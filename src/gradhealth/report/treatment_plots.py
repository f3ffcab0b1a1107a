"""Before/after gradient-flow figure of a treatment (:func:`gradhealth.treat`)."""

from __future__ import annotations

from typing import Any

from gradhealth.report.plots import plot_gradient_flow, pyplot

__all__ = ["plot_before_after"]


def plot_before_after(result: Any, title: str | None = None) -> Any:
    """The diagnosed network's gradient flow next to the treated network's, on one log scale.

    Args:
        result: A :class:`gradhealth.treatment.TreatmentResult` (needs ``before``, ``after``
            and ``accuracy``; ``before`` may be None).
        title: Figure title (default: statuses and accuracy).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    reports = [("before", result.before)] if result.before is not None else []
    reports.append(("after treatment and training", result.after))
    fig, axes = plt.subplots(1, len(reports), figsize=(7 * len(reports), 3.8), squeeze=False)
    for ax, (label, report) in zip(axes[0], reports, strict=True):
        plot_gradient_flow(report, ax=ax,
                           title=f"{label}: {report.status} (score {report.score:g})")
    lows = [ax.get_ylim()[0] for ax in axes[0]]
    highs = [ax.get_ylim()[1] for ax in axes[0]]
    for ax in axes[0]:
        ax.set_ylim(min(lows), max(highs))
    fig.suptitle(title or f"Treatment verified by a second checkup: test accuracy "
                 f"{result.accuracy:.2f}")
    fig.tight_layout()
    return fig
