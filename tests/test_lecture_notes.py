"""lecture_notes.md states the code's numbers: thresholds, activation facts, the Jacobian order.

Issue 11 found the notes disagreeing with the code (the exploding/dead thresholds, GELU's derivative
range, several activations' mean outputs, the order of the Jacobian product). Each test reads the
number from the library and looks for it in the notes, so a change on either side fails here.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

from gradhealth import Thresholds
from gradhealth.init.activations import catalog

NOTES = pathlib.Path(__file__).parents[1] / "lecture_notes.md"
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _section(number: int) -> str:
    text = NOTES.read_text()
    match = re.search(rf"^## {number}\. .*?(?=^## \d+\. |\Z)", text, flags=re.S | re.M)
    assert match, f"section {number} not found"
    return match.group(0)


def _power(value: float) -> str:
    """``1e-3`` -> ``10⁻³`` as the notes write it."""
    exponent = round(math.log10(value))
    assert math.isclose(value, 10.0 ** exponent), value
    return "10" + str(exponent).translate(SUPERSCRIPT)


def test_diagnosis_rules_quote_the_default_thresholds():
    text = " ".join(_section(4).split())
    t = Thresholds()
    assert f"`exploding_norm` = {_power(t.exploding_norm)}" in text
    assert f"`exploding_ratio` = {_power(t.exploding_ratio)} × the norm of the last (output) layer" in text
    assert f"`dead_fraction` = {t.dead_fraction:.0%}".replace("%", " %") in text
    assert f"`vanishing_ratio` = {_power(t.vanishing_ratio)} × the largest layer norm" in text
    assert f"`vanishing_norm` = {_power(t.vanishing_norm)}" in text
    assert "median" not in text and "half the output units" not in text


def _activation_rows() -> dict[str, list[str]]:
    rows = {}
    for line in _section(6).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("activation", "---"):
            rows[cells[0]] = cells
    return rows


NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "ReLU": "relu", "Leaky ReLU": "leaky_relu",
         "ELU": "elu", "SELU": "selu", "GELU": "gelu", "Swish / SiLU": "silu"}


def test_activation_table_mean_outputs_match_the_catalog():
    rows = _activation_rows()
    assert set(rows) == set(NAMES)
    table = catalog()
    for label, name in NAMES.items():
        stated = float(re.match(r"-?\d+\.\d+", rows[label][3]).group(0))
        assert stated == pytest.approx(table.loc[name, "mean_output"], abs=0.006), label


def _gelu_derivative(z: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return cdf + z * pdf


def _silu_derivative(z: np.ndarray) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1.0 + z * (1.0 - s))


@pytest.mark.parametrize("label, derivative", [("GELU", _gelu_derivative),
                                               ("Swish / SiLU", _silu_derivative)])
def test_smooth_rectifier_derivative_ranges_match_their_formulas(label, derivative):
    z = np.linspace(-10.0, 10.0, 200_001)
    d = derivative(z)
    cell = _activation_rows()[label][2].replace("−", "-")
    low, high = (float(v) for v in re.findall(r"-?\d+\.\d+", cell))
    assert low == pytest.approx(d.min(), abs=0.006) and low < 0
    assert high == pytest.approx(d.max(), abs=0.006)
    assert high == pytest.approx(catalog().loc[NAMES[label], "max_derivative"], abs=0.006)


def test_residual_jacobian_product_is_written_output_first():
    """Row-vector gradients multiply the Jacobians from the output down: block L-1 first."""
    text = _section(8)
    line = next(ln for ln in text.splitlines() if ln.startswith("∂L/∂a⁽ˡ⁾ = ∂L/∂a⁽ᴸ⁾ ·"))
    factors = re.findall(r"∂F_\{?([^}/]+)\}?/", line)
    assert factors[0] == "L−1" and factors[-1] == "l", factors
