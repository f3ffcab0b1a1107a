"""Figures for weight initialization: weight distributions, variance across layers, LSUV.

Pure functions of the library's results (:mod:`gradhealth.init.initializers`,
:func:`gradhealth.course.experiments.grid`, the history of :func:`gradhealth.lsuv_init`); matplotlib
is imported on first use (Agg when not in a notebook).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradhealth.core.variance import expected_weight_variance
from gradhealth.init.initializers import sample_weights
from gradhealth.report.plots import pyplot

__all__ = ["WIDGETS_ENV", "depth_scale_explorer", "layer_activations", "plot_layer_histograms",
           "plot_lsuv_history", "plot_signal_through_depth", "plot_variance_by_layer",
           "plot_weight_distributions", "widgets_available"]

WIDGETS_ENV: str = "GRADHEALTH_WIDGETS"
"""Set to ``1`` to force the interactive slider, ``0`` to force the static figure. Unset, the slider
is shown only in a live Jupyter session (``JPY_SESSION_NAME`` is set by jupyter-server): an
executed or exported notebook has no widget front-end, so it gets the static figure."""

_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "linear": lambda z: z,
}


def plot_weight_distributions(initializers: Sequence[str], shape: Sequence[int] = (256, 256),
                              seed: int = 0, bins: int = 80) -> Any:
    """Histogram of one kernel drawn by each initializer, with its expected standard deviation.

    Args:
        initializers: Initializer names.
        shape: Kernel shape.
        seed: Draw seed.
        bins: Histogram bins.

    Returns:
        The matplotlib Figure.
    """

    plt = pyplot()
    n = len(initializers)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), initializers, strict=False):
        w = sample_weights(name, shape, seed).ravel()
        std = np.sqrt(expected_weight_variance(name, shape))
        ax.hist(w, bins=bins, density=True, color="#5c6bc0", alpha=0.8, histtype="stepfilled")
        for s in (-std, std):
            ax.axvline(s, color="#c62828", ls="--", lw=1)
        ax.set(title=f"{name}\nexpected std {std:.4f}, measured {w.std():.4f}",
               xlabel="weight value", ylabel="density")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Weight distributions for a {tuple(shape)} kernel")
    fig.tight_layout()
    return fig


def plot_variance_by_layer(table: Any, value: str = "activation_variance",
                           by: str = "initializer", ax: Any = None, title: str | None = None
                           ) -> Any:
    """A per-layer quantity (mean over seeds) for each configuration, log scale.

    Args:
        table: Output of :func:`gradhealth.init.propagation.variance_propagation` (several
            concatenated) or of ``grid(measure="gradient_flow")`` filtered to one depth.
        value: Column to draw (``activation_variance``, ``gradient_variance``,
            ``kernel_grad_norm``...).
        by: Column whose values get one line each (several columns: pass a list).
        ax: Axes to draw on, its figure's layout left to the caller (default: a new,
            laid-out figure).
        title: Title (default: from ``value``).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    keys = [by] if isinstance(by, str) else list(by)
    for key, group in table.groupby(keys, sort=False):
        mean = group.groupby("layer")[value].mean()
        label = " + ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        ax.semilogy(mean.index, np.maximum(mean.to_numpy(dtype=float), np.finfo(float).tiny),
                    marker="o", ms=2.5, label=label)
    ax.set(title=title or f"{value.replace('_', ' ')} across layers", xlabel="layer",
           ylabel=f"{value.replace('_', ' ')} (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if own:
        fig.tight_layout()
    return fig


def plot_lsuv_history(history: Any, ax: Any = None) -> Any:
    """LSUV calibration: each layer's output variance per iteration, with the target band.

    Args:
        history: The DataFrame returned by :func:`gradhealth.lsuv_init`.
        ax: Axes to draw on, its figure's layout left to the caller (default: a new,
            laid-out figure).

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    own = ax is None  # a caller's Axes: the caller lays its figure out
    if own:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    target = history.attrs.get("target_var", 1.0)
    tol = history.attrs.get("tol", 0.1)
    ax.axhspan(target - tol, target + tol, color="#a5d6a7", alpha=0.5,
               label=f"target {target:g} ± {tol:g}")
    for layer, group in history.groupby("layer", sort=False):
        ax.plot(group["iteration"], group["variance"], marker="o", label=layer)
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib is optional and slow to import

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("log")
    ax.set(title="LSUV calibration: output variance of each layer", xlabel="iteration",
           ylabel="output variance on the batch (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    if own:
        fig.tight_layout()
    return fig


def layer_activations(depth: int, weight_scale: float, activation: str = "tanh", width: int = 256,
                      batch: int = 500, seed: int = 0) -> list[np.ndarray]:
    """The activations of every layer of a random MLP on standard-normal inputs (NumPy, float64).

    Each layer draws ``W ~ N(0, (weight_scale / sqrt(width))^2)``: ``weight_scale = 1`` is LeCun's
    ``Var(W) = 1/fan_in``, ``sqrt(2)`` He's, ``0.16`` about CS231n's ``0.01 * N(0, 1)`` at width 256.

    Args:
        depth: Number of layers (>= 1).
        weight_scale: Weight standard deviation in units of ``1/sqrt(fan_in)`` (> 0).
        activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or ``"linear"``.
        width: Units per layer.
        batch: Examples.
        seed: Seed of the input and weight draws.

    Returns:
        ``depth`` arrays of shape ``(batch, width)``, first layer first.

    Raises:
        ValueError: Bad ``depth``, ``weight_scale`` or ``activation``.

    References:
        Karpathy, CS231n notes "Neural Networks Part 2" (activation statistics per layer);
        Glorot & Bengio 2010, figure 3.
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"Argument `depth` must be a positive integer. Received: depth={depth!r}")
    if not (isinstance(weight_scale, (int, float)) and np.isfinite(weight_scale) and weight_scale > 0):
        raise ValueError("Argument `weight_scale` must be a positive number. "
                         f"Received: weight_scale={weight_scale!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"Argument `activation` must be one of {sorted(_ACTIVATIONS)}. "
                         f"Received: activation={activation!r}")
    rng = np.random.default_rng(seed)
    f = _ACTIVATIONS[activation]
    h = rng.standard_normal((batch, width))
    out = []
    for _ in range(int(depth)):
        w = rng.standard_normal((width, width)) * (weight_scale / np.sqrt(width))
        h = f(h @ w)
        out.append(h)
    return out


def plot_layer_histograms(acts: Sequence[np.ndarray], layers: Sequence[int] | None = None,
                          title: str = "", axes: Any = None) -> Any:
    """One histogram of the activations per chosen layer, on a shared x range.

    Args:
        acts: Per-layer activations (from :func:`layer_activations`).
        layers: 1-based layer numbers to show (default: about five spread over the depth).
        title: Row title.
        axes: A sequence of matplotlib Axes, one per layer; a new figure when None.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    depth = len(acts)
    if layers is None:
        layers = sorted({1, *np.linspace(1, depth, min(depth, 5)).round().astype(int).tolist()})
    if axes is None:
        _, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers), 2.4), squeeze=False)
        axes = axes[0]
    high = max(float(np.abs(acts[k - 1]).max()) for k in layers) or 1.0
    for ax, k in zip(axes, layers, strict=False):
        a = acts[k - 1].ravel()
        ax.hist(a, bins=60, range=(-high, high), color="#1565c0", histtype="stepfilled")
        ax.set_title(f"layer {k}: std {a.std():.2g}", fontsize=9)
        ax.set_yticks([])
    if title:
        axes[0].set_ylabel(title, fontsize=9)
    return axes[0].figure


def plot_signal_through_depth(depth: int = 20, weight_scale: float = 1.0, activation: str = "tanh",
                              seed: int = 0) -> Any:
    """Standard deviation of every layer's activations, and histograms of a few layers.

    Args:
        depth: Number of layers.
        weight_scale: Weight standard deviation in units of ``1/sqrt(fan_in)``.
        activation: As in :func:`layer_activations`.
        seed: Draw seed.

    Returns:
        The matplotlib Figure.
    """
    plt = pyplot()
    acts = layer_activations(depth, weight_scale, activation, seed=seed)
    layers = sorted({1, max(1, depth // 2), depth})
    fig = plt.figure(figsize=(11, 3.0))
    grid = fig.add_gridspec(1, 1 + len(layers), width_ratios=[2.2] + [1] * len(layers))
    ax = fig.add_subplot(grid[0, 0])
    stds = [float(a.std()) for a in acts]
    ax.semilogy(range(1, depth + 1), np.maximum(stds, 1e-300), "o-", markersize=3)
    ax.set_xlabel("layer")
    ax.set_ylabel("activation std (log)")
    ax.set_title(f"{activation}, depth {depth}, W std = {weight_scale:g}/sqrt(fan_in)", fontsize=9)
    ax.grid(alpha=0.3)
    plot_layer_histograms(acts, layers, axes=[fig.add_subplot(grid[0, i + 1]) for i in
                                              range(len(layers))])
    fig.tight_layout()
    return fig


def widgets_available() -> bool:
    """Whether the interactive slider can be shown here.

    Returns:
        True when :data:`WIDGETS_ENV` asks for widgets (or, unset, a live Jupyter session is
        detected) and ``ipywidgets`` is installed; False otherwise.
    """
    choice = os.environ.get(WIDGETS_ENV)
    if choice is not None:
        wanted = choice.strip() not in ("", "0", "false", "no")
    else:
        wanted = bool(os.environ.get("JPY_SESSION_NAME"))
    if not wanted:
        return False
    try:
        import ipywidgets  # noqa: F401  # lazy: optional, only for the interactive slider
    except ImportError:
        return False
    return True


def depth_scale_explorer(activation: str = "tanh", depth: int = 20,
                         weight_scale: float = 1.0) -> Any:
    """An ipywidgets slider for depth and weight scale over :func:`plot_signal_through_depth`.

    Args:
        activation: As in :func:`layer_activations`.
        depth: Initial depth.
        weight_scale: Initial weight scale.

    Returns:
        An ``ipywidgets.interactive`` widget, or None when widgets are not available (then show
        the static :func:`plot_signal_through_depth` instead).
    """
    if not widgets_available():
        return None
    import ipywidgets as widgets  # lazy: optional, checked by widgets_available

    plt = pyplot()

    def draw(depth: int, weight_scale: float, activation: str) -> None:
        plot_signal_through_depth(depth, weight_scale, activation)
        plt.show()

    return widgets.interactive(
        draw,
        depth=widgets.IntSlider(value=depth, min=1, max=60, step=1, description="depth"),
        weight_scale=widgets.FloatLogSlider(value=weight_scale, base=10, min=-1.5, max=0.7,
                                            step=0.05, description="W scale"),
        activation=widgets.Dropdown(options=sorted(_ACTIVATIONS), value=activation,
                                    description="activation"))
