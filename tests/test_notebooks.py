"""Execute every course notebook (twice: the numbers it claims must be reproducible)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradhealth.course import NOTEBOOKS, run_notebook

ROOT = Path(__file__).resolve().parents[1]
FOUND = [ROOT / "notebooks" / n for n in NOTEBOOKS if (ROOT / "notebooks" / n).exists()]


def test_course_notebooks_exist_under_seed_names():
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert names, "no notebooks"
    assert set(names) <= set(NOTEBOOKS), f"unexpected notebook names: {names}"


@pytest.mark.parametrize("path", FOUND, ids=[p.stem for p in FOUND])
def test_notebook_is_committed_clean_and_follows_the_course_rules(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "week5-gradients"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name} has committed outputs"
            assert cell.get("execution_count") is None
    source = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "gradhealth.course.exercises" in source or "gh.exercises" in source, "no self-check exercises"
    assert "summary(" in source and "gradhealth.course" in source, (
        "no gradhealth.course.summary record for the reproducibility test")
    assert "Learning objectives" in source or "learning objectives" in source.lower()


@pytest.mark.notebook
@pytest.mark.parametrize("path", FOUND, ids=[p.stem for p in FOUND])
def test_notebook_runs_and_is_reproducible(path, tmp_path):
    first, seconds = run_notebook(path, out_dir=tmp_path)
    assert first, f"{path.name} recorded no summary"
    second, _ = run_notebook(path)
    assert second == first, "two runs of the notebook gave different numbers"
    print(f"{path.name}: {seconds:.1f} s")
