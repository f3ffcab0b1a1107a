"""Checks shared by the multi-device tests: a run on several devices against one device."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

REL = 1e-5  # the tolerance for statistics against one device
STAT_COLUMNS = ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_std", "global_norm",
                "weight_norm")


def assert_histories_match(got: Any, want: Any, columns: Iterable[str] = STAT_COLUMNS) -> None:
    """Two monitor histories hold the same rows and, column by column, the same statistics."""
    assert len(got) == len(want) > 0
    for col in columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=REL,
                                   err_msg=col)


def assert_arrays_match(got: Sequence[Any], want: Sequence[Any]) -> None:
    """Two runs' arrays (final weights, one step's updates) agree to float32 rounding."""
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
