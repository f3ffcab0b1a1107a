"""Named, documented thresholds for the gradient checkup.

Every number the diagnosis uses lives here, with the reason it has the value it has. Override any
of them with ``Thresholds(vanishing_ratio=1e-4)`` or ``Thresholds().replace(...)``; the defaults
are the ones the course notebooks and tests use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds for classifying per-layer gradient health.

    Which rule applies to which layer, and why, is explained in
    :func:`gradhealth.core.diagnosis.classify_layers` and the README's "How the diagnosis
    decides". ``vanishing_ratio`` and ``exploding_ratio`` also judge the gradient *through time*
    of an ungated recurrent layer: the gradient reaching its first timestep compared with the
    largest one it receives (Bengio, Simard & Frasconi 1994).

    Attributes:
        vanishing_ratio: A layer whose gradient norm is below this fraction of the largest layer
            gradient norm in the network is "vanishing". With the sigmoid's maximal derivative of
            0.25, ten sigmoid layers already shrink the signal by up to 0.25**10 ~ 1e-6; a spread
            of three orders of magnitude (1e-3) means the first layers learn >1000x slower than
            the last ones with any optimizer that does not rescale per parameter (Hochreiter 1991;
            Glorot & Bengio 2010). Healthy He-initialised ReLU networks of depth 30 measure a
            spread below 1e1 (see tests).
        vanishing_norm: A layer whose gradient L2 norm is below this absolute value is vanishing
            whatever its neighbours do: 1e-7 is below float32 resolution of weights of order
            1 (eps 1.2e-7), so SGD updates of that size do not change the weights at all.
        exploding_norm: A layer whose gradient L2 norm exceeds this is "exploding". Gradient
            clipping thresholds used in practice are 0.1-10 (Pascanu et al. 2013 use 1-10);
            a norm 100x above the largest of them (1e3) means any learning rate that trains the
            other layers takes destructive steps here.
        exploding_ratio: A layer whose gradient norm exceeds this multiple of the last (output)
            layer's norm is exploding: the gradient grew 1000x on its way back from the output,
            the mirror image of ``vanishing_ratio`` (Pascanu et al. 2013, sec. 2).
        dead_fraction: A layer in which at least this fraction of output units has a gradient of
            exactly zero on the whole batch is "dead" (dying ReLU; Lu et al. 2019). Healthy
            He-initialised 30-layer ReLU MLPs of width 64 already show up to ~50% such units in
            their deepest layers on a 128-example batch (the representation degenerates with
            depth), so the default 0.75 leaves margin above that and flags layers that have lost
            three units in four. Smaller batches make more units look dead: use >= 64 examples.
        vanishing_step: The absolute floor for layers judged by their *relative* gradient
            ``||g|| / ||W||`` (kernels followed by normalization, embedding rows): below it, an
            SGD step at any learning rate up to 1 changes the weights by less than float32's
            resolution (machine epsilon 1.2e-7), so the layer cannot learn. A ratio of two norms
            of the same tensor, it does not depend on the layer's parameter count or on the
            batch size (the loss is a mean over the batch). Kernels followed by normalization
            have no absolute upper limit: their function depends only on ``W / ||W||``, and a
            large step grows ``||W||``, which shrinks the next effective step (van Laarhoven
            2017, "L2 Regularization versus Batch and Weight Normalization").
        score_decades: In the health score, a vanishing/exploding layer loses credit linearly
            with the number of decades (powers of 10) it lies beyond its threshold, reaching zero
            credit at this many decades (6: the sigmoid decay over about ten layers).
    """

    vanishing_ratio: float = 1e-3
    vanishing_norm: float = 1e-7
    exploding_norm: float = 1e3
    exploding_ratio: float = 1e3
    dead_fraction: float = 0.75
    vanishing_step: float = 1e-7
    score_decades: float = 6.0

    def __post_init__(self) -> None:
        for name in ("vanishing_ratio", "vanishing_norm", "exploding_norm", "exploding_ratio",
                     "vanishing_step", "score_decades"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(
                    f"Argument `{name}` must be a positive finite number. Received: {name}={value!r}"
                )
        if isinstance(self.dead_fraction, bool) or not isinstance(self.dead_fraction, (int, float)) or not (
            0 < self.dead_fraction <= 1
        ):
            raise ValueError(
                "Argument `dead_fraction` must be a number in (0, 1]. "
                f"Received: dead_fraction={self.dead_fraction!r}"
            )
        if self.vanishing_ratio >= 1:
            raise ValueError(
                "Argument `vanishing_ratio` must be below 1. "
                f"Received: vanishing_ratio={self.vanishing_ratio!r}"
            )
        if self.exploding_ratio <= 1:
            raise ValueError(
                "Argument `exploding_ratio` must be above 1. "
                f"Received: exploding_ratio={self.exploding_ratio!r}"
            )
        if self.vanishing_norm >= self.exploding_norm:
            raise ValueError(
                "Argument `vanishing_norm` must be below `exploding_norm`. Received: "
                f"vanishing_norm={self.vanishing_norm!r}, exploding_norm={self.exploding_norm!r}"
            )

    def replace(self, **changes: Any) -> Thresholds:
        """Return a copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        """The thresholds as a plain dict (JSON-serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def coerce(cls, value: Thresholds | dict[str, Any] | None) -> Thresholds:
        """Accept ``None`` (defaults), a ``Thresholds`` or a dict of overrides."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ValueError(
                    f"Argument `thresholds` has unknown keys {unknown}; valid keys are "
                    f"{[f.name for f in dataclasses.fields(cls)]}. Received: thresholds={value!r}"
                )
            return cls(**value)
        raise TypeError(
            "Argument `thresholds` must be a gradhealth.Thresholds, a dict or None. "
            f"Received: thresholds={value!r} (of type {type(value).__name__})"
        )
