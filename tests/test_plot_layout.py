"""Plots drawn into a caller's Axes leave the figure's layout to the caller.

The caller's figure may hold other panels, a suptitle or a colorbar placed by hand, so laying it
out is the figure owner's decision (as with seaborn's axes-level functions). A composite figure
(a treatment's before/after, a notebook's side-by-side panels) used to be laid out once per
panel and again at the end.
"""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gradhealth.report.plots import compare_gradient_flow, plot_gradient_flow  # noqa: E402
from gradhealth.report.treatment_plots import plot_before_after  # noqa: E402


def report(decades: int = 20, status: str = "vanishing"):
    layers = pd.DataFrame({"layer": [f"dense_{i}" for i in range(decades)],
                           "grad_norm": [10.0 ** -i for i in range(decades)],
                           "status": ["vanishing"] * (decades - 1) + ["healthy"]})
    return SimpleNamespace(layers=layers, status=status, score=12.0, context={})


@pytest.fixture
def layouts(monkeypatch):
    calls = []
    original = Figure.tight_layout

    def counting(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "tight_layout", counting)
    yield calls
    plt.close("all")


@pytest.mark.parametrize("plot", [plot_gradient_flow,
                                  lambda r, ax=None: compare_gradient_flow({"a": r}, ax=ax)])
def test_own_figure_is_laid_out_and_a_callers_axes_is_not(layouts, plot):
    fig = plot(report())
    assert layouts == [fig]
    layouts.clear()
    own_fig, ax = plt.subplots()
    assert plot(report(), ax=ax) is own_fig
    assert layouts == []
    assert ax.get_yscale() == "log" and ax.patches or ax.lines  # something was drawn


def test_before_after_is_laid_out_once(layouts):
    fig = plot_before_after(SimpleNamespace(before=report(), after=report(3, "healthy"),
                                            accuracy=0.9))
    assert layouts == [fig] and len(fig.axes) == 2
    low, high = fig.axes[0].get_ylim()
    assert fig.axes[1].get_ylim() == (low, high)  # one scale for both panels
