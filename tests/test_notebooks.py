"""Every course notebook executed with its figures, in both editions, as pages and decks.

Each notebook runs twice (tests/_course_build.py): as committed (the instructor edition's code,
what ``make demo`` runs) and as the student edition. The two runs are independent kernels: the
numbers the student edition records must be the committed run's (reproducible, and no recorded
claim depends on an answer). Pages and decks are rendered from those outputs and opened in
headless Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _course_build import SOURCES, VENDOR, course_build

from gradhealth.course import NOTEBOOKS
from gradhealth.course.browser import check_pages, find_chromium
from gradhealth.course.editions import (
    FIGURE,
    OPTIONAL,
    answer_leaks,
    figure_problems,
    has_image,
    tags,
)
from gradhealth.course.runner import summaries

ROOT = Path(__file__).resolve().parents[1]
FOUND = SOURCES
IDS = [p.stem for p in FOUND]


def test_course_notebooks_exist_under_seed_names():
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert names, "no notebooks"
    assert set(names) <= set(NOTEBOOKS), f"unexpected notebook names: {names}"


@pytest.mark.parametrize("path", FOUND, ids=IDS)
def test_notebook_is_committed_clean_and_follows_the_course_rules(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "week5-gradients"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name} has committed outputs"
            assert cell.get("execution_count") is None
        if FIGURE in tags(cell):
            assert cell["cell_type"] == "code", "a 'figure' tag on a markdown cell"
    source = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "gradhealth.course.exercises" in source or "gh.exercises" in source, "no self-check exercises"
    assert "summary(" in source and "gradhealth.course" in source, (
        "no gradhealth.course.summary record for the reproducibility test")
    assert "Learning objectives" in source or "learning objectives" in source.lower()


def _executed(name: str):
    build = course_build()
    if name in build.errors:
        pytest.fail(f"{name} failed to execute:\n{build.errors[name]}")
    return build.executed[name]


@pytest.mark.notebook
@pytest.mark.parametrize("path", FOUND, ids=IDS)
def test_notebook_runs_and_shows_every_figure(path):
    nb = _executed(path.name)
    assert summaries(nb), f"{path.name} recorded no summary"
    assert figure_problems(nb) == []
    assert any(has_image(c) for c in nb.cells), "no figure at all"
    print(f"{path.name}: {course_build().seconds[path.name]:.1f} s")


@pytest.mark.notebook
@pytest.mark.parametrize("path", FOUND, ids=IDS)
def test_student_edition_runs_unanswered_and_reproduces_the_numbers(path):
    build = course_build()
    key = f"{path.name} (student)"
    if key in build.errors:
        pytest.fail(f"the student edition of {path.name} failed (its checkers must report "
                    f"'not answered yet', not raise):\n{build.errors[key]}")
    student, committed = build.student[path.name], _executed(path.name)
    source = json.loads(path.read_text())
    assert answer_leaks(student, source) == []
    mine, reference = summaries(student), summaries(committed)
    assert mine, "the student edition recorded no summary"
    missing = sorted(set(mine) - set(reference))
    assert not missing, f"recorded only in the student edition: {missing}"
    differ = {k: (mine[k], reference[k]) for k in mine if mine[k] != reference[k]}
    assert not differ, f"two runs gave different numbers (student, committed): {differ}"


@pytest.mark.notebook
def test_pages_and_decks_render_offline_in_chromium(tmp_path):
    build = course_build()
    if find_chromium() is None:
        pytest.skip("no Chromium installed (make browser, or apt-get install chromium): "
                    "the pages are not opened")
    assert (VENDOR / "require.js").is_file(), "run `make vendor` first (offline scripts)"
    names = [p.name for p in FOUND if p.name in build.executed]
    assert names, "no notebook executed"
    pages = [build.notebooks / Path(n).with_suffix(".html").name for n in names]
    decks = sorted(build.slides.glob("*/*.slides.html"))
    assert len(decks) == sum(1 for n in names for t in ("2h", "3h")
                             if (build.slides / t / f"{Path(n).stem}.slides.html").exists())
    checks = check_pages(pages + decks, screenshots=tmp_path)
    for check in checks:
        assert check.errors == [], f"{check.page.name}: {check.errors}"
        assert check.shown == check.images, f"{check.page.name}: images that did not load"
    for name, check in zip(names, checks, strict=False):
        nb = build.executed[name]
        images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in
                     o.get("data", {}))
        assert check.images >= images > 0, f"{name}: {check.images} images on the page"
    for check in checks[len(pages):]:
        assert check.slides > 0, f"{check.page.name} has no slides"
    # the 2-hour deck leaves the optional cells out
    for name in names:
        nb = build.executed[name]
        stem = Path(name).stem
        two, three = (build.slides / t / f"{stem}.slides.html" for t in ("2h", "3h"))
        if two.exists() and any(OPTIONAL in tags(c) for c in nb.cells):
            assert two.stat().st_size < three.stat().st_size
