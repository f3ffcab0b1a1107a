"""One source for activation facts: the table agrees with measurement, the library and the notes."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from gradhealth.core import knowledge
from gradhealth.course.exercises import initialization, solutions
from gradhealth.init import activations
from gradhealth.treatment import prescribe

NOTES = pathlib.Path(__file__).parents[1] / "lecture_notes.md"
CATALOG = list(activations.CATALOG_NAMES)


@pytest.fixture(scope="module")
def table():
    return activations.catalog(cost=False)


@pytest.mark.parametrize("name", CATALOG)
def test_table_derivative_facts_match_autodiff(name):
    facts = knowledge.facts(name)
    x = np.linspace(-10, 10, 200_001)
    d = activations.derivative(name, x)
    assert np.max(d) == pytest.approx(facts.max_derivative, rel=2e-3)
    if name not in ("relu", "leaky_relu", "elu", "selu"):  # kinks: f'(0) is a convention there
        assert float(activations.derivative(name, np.array([0.0]))[0]) == pytest.approx(
            facts.derivative_at_zero, abs=1e-3)


@pytest.mark.parametrize("name", CATALOG)
def test_table_families_match_measured_properties(name, table):
    facts = knowledge.facts(name)
    row = table.loc[name]
    assert bool(row["self_normalizing"]) == (facts.family == "self_normalizing")
    if facts.family in ("saturating", "symmetric"):
        assert not row["rectifier_like"]
    assert bool(row["zero_centred"]) == facts.zero_centred
    assert row["pairs_with"] == facts.initializer


def test_tanh_has_one_answer_everywhere(table):
    answer = knowledge.matched_initializer("tanh")
    assert answer == "glorot_uniform"
    assert table.loc["tanh", "pairs_with"] == answer
    ranked = activations.recommend(depth=10, table=table)
    assert ranked.set_index("activation").loc["tanh", "initializer"] == answer
    assert initialization.check_pairing("tanh", answer)
    assert solutions.check_matched_initializer("tanh", answer)
    assert not solutions.check_matched_initializer("tanh", "lecun_normal")


def test_prescribe_pairs_a_new_activation_from_the_table():
    from gradhealth.core.diagnosis import Recommendation

    class Report:
        status, score, findings, context = "vanishing", 10.0, ["..."], {}
        recommendations = [Recommendation("activation", "Replace sigmoid with tanh", "why",
                                          ("dense",), "ref", params={"activation": "tanh"})]

    plan = prescribe(Report())
    init = [s for s in plan.steps if s.category == "initializer"]
    assert init and init[0].change["kernel_initializer"] == knowledge.matched_initializer("tanh")


def _notes_initializer_table() -> dict[str, str]:
    """The lecture notes' initializer table: scheme -> its 'matched activation' cell."""
    rows = {}
    for line in NOTES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("LeCun", "Xavier / Glorot", "He / Kaiming"):
            rows[cells[0]] = cells[2]
    return rows


def test_lecture_notes_pairings_agree_with_the_table():
    scheme = {"LeCun": "lecun_normal", "Xavier / Glorot": "glorot_uniform",
              "He / Kaiming": "he_normal"}
    rows = _notes_initializer_table()
    assert set(rows) == set(scheme)
    words = {"tanh": "tanh", "sigmoid": "sigmoid", "SELU": "selu", "ReLU": "relu"}
    for name, cell in rows.items():
        for word, act in words.items():
            if re.search(rf"\b{word}\b", cell):
                assert knowledge.matched_initializer(act) == scheme[name], (name, word)


def test_lecture_notes_quote_the_tables_derivative_numbers():
    text = NOTES.read_text()
    sigmoid = knowledge.facts("sigmoid").max_derivative
    assert f"σ' ≤ {sigmoid:g}" in text
    assert f"`tanh'(0) = {knowledge.facts('tanh').derivative_at_zero:g}`" in text
    selu = knowledge.facts("selu")
    assert "(0, λα]" in text and selu.max_derivative == pytest.approx(1.0507 * 1.6733, rel=1e-4)
