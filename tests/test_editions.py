"""Student edition, instructor edition, slides and figure checks on the cell conventions.

The transforms are checked on tests/fixtures/course_conventions.ipynb (a tiny notebook that uses
every convention) and on the committed course notebooks; the fixture is also executed in both
editions with ``MPLBACKEND=Agg`` in the environment (what the Makefile used to export), rendered
as a page and a deck, and opened in headless Chromium.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

from gradhealth.course import editions as E
from gradhealth.course.browser import check_pages, find_chromium
from gradhealth.course.render import DEFAULT_VENDOR, write_html, write_slides
from gradhealth.course.runner import NOTEBOOKS, execute, summaries

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "course_conventions.ipynb"
COURSE = [ROOT / "notebooks" / n for n in NOTEBOOKS if (ROOT / "notebooks" / n).exists()]
VENDOR = ROOT / DEFAULT_VENDOR


def _nb(path: Path = FIXTURE) -> dict:
    return json.loads(path.read_text())


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _by_tag(nb: dict, tag: str) -> list[dict]:
    return [c for c in nb["cells"] if tag in E.tags(c)]


def test_fixture_uses_every_convention():
    nb = _nb()
    for tag in (E.SOLUTION, E.INSTRUCTOR, E.SPEAKER_NOTES, E.OPTIONAL, E.FIGURE):
        assert _by_tag(nb, tag), f"the fixture has no {tag!r} cell"
    assert any(c["metadata"].get("gradhealth", {}).get("student") for c in nb["cells"])
    assert any(c["metadata"].get("slideshow") for c in nb["cells"])


def test_student_edition_removes_answers_and_instructor_material():
    nb = _nb()
    student = E.student_edition(nb)
    assert nb == _nb(), "the committed notebook was changed"
    assert not _by_tag(student, E.INSTRUCTOR) and not _by_tag(student, E.SPEAKER_NOTES)
    texts = [_src(c) for c in student["cells"]]
    assert E.STUDENT_PLACEHOLDER in texts
    assert "def double(x):\n    return None  # your code here" in texts
    for cell in _by_tag(nb, E.SOLUTION):
        assert _src(cell) not in texts
    assert len(student["cells"]) == len(nb["cells"]) - 2
    assert student["metadata"]["gradhealth"]["edition"] == "student"
    assert E.answer_leaks(student, nb) == []


def test_answer_leaks_finds_what_was_left_in():
    nb = _nb()
    leaky = E.student_edition(nb)
    leaky["cells"].append(copy.deepcopy(_by_tag(nb, E.SOLUTION)[0]))
    leaky["cells"][-1]["metadata"]["tags"] = []
    assert any("holds the source" in line for line in E.answer_leaks(leaky, nb))
    leaky["cells"].append(copy.deepcopy(_by_tag(nb, E.INSTRUCTOR)[0]))
    assert any("tagged ['instructor']" in line for line in E.answer_leaks(leaky, nb))


def test_solution_markdown_gets_the_written_answer_placeholder():
    nb = _nb()
    nb["cells"].append({"cell_type": "markdown", "metadata": {"tags": ["solution"]},
                        "source": "Because sigma' <= 1/4."})
    assert E.student_edition(nb)["cells"][-1]["source"] == E.STUDENT_MARKDOWN


def test_instructor_edition_runs_the_committed_code_and_labels_speaker_notes():
    nb = _nb()
    inst = E.instructor_edition(nb)
    code = [_src(c) for c in nb["cells"] if c["cell_type"] == "code"]
    assert [_src(c) for c in inst["cells"] if c["cell_type"] == "code"] == code
    notes = _by_tag(inst, E.SPEAKER_NOTES)
    assert notes and all(_src(c).startswith("> **Speaker notes.**") for c in notes)
    assert E.instructor_edition(inst)["cells"] == inst["cells"], "labelled twice"


@pytest.mark.parametrize("timeline", sorted(E.TIMELINES))
def test_slides_edition_follows_the_timeline(timeline):
    nb = _nb()
    deck = E.slides_edition(nb, timeline)
    kinds = {c["metadata"]["slideshow"].get("slide_type") for c in _by_tag(deck, E.SPEAKER_NOTES)}
    assert kinds == {"notes"}
    assert {c["metadata"]["slideshow"]["slide_type"] for c in _by_tag(deck, E.INSTRUCTOR)} == {"skip"}
    kept = len(_by_tag(deck, E.OPTIONAL))
    assert kept == (len(_by_tag(nb, E.OPTIONAL)) if timeline in E.KEEPS_OPTIONAL else 0)


def test_timelines_are_the_seed_tables():
    assert sum(E.TIMELINES["2h"].values()) == 100  # 2 h less the 15 min break and 5 min wrap-up
    assert sum(E.TIMELINES["3h"].values()) == 165  # 3 h less the 15 min break
    assert set(E.TIMELINES["3h"]) == set(NOTEBOOKS)
    with pytest.raises(ValueError, match="timeline"):
        E.slides_edition(_nb(), "90min")
    with pytest.raises(ValueError, match="name"):
        E.edition(_nb(), "teacher")


def test_slides_without_layout_get_one_slide_per_heading():
    nb = _nb()
    for cell in nb["cells"]:
        cell["metadata"].pop("slideshow", None)
    deck = E.slides_edition(nb, "3h")
    heads = [c for c in deck["cells"] if c["cell_type"] == "markdown" and _src(c).startswith("#")]
    assert heads and all(c["metadata"]["slideshow"]["slide_type"] == "slide" for c in heads)


def test_figure_problems_flags_plotting_cells_without_an_image():
    nb = _nb()
    problems = E.figure_problems(nb)  # nothing executed: every plotting cell lacks its image
    assert len(problems) == 2 and all("shows no image" in p for p in problems)
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo="}}
    for cell in nb["cells"]:
        if E.FIGURE in E.tags(cell):
            cell["outputs"] = [png]
    assert E.figure_problems(nb) == []
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "source":
                        "ax.plot([1, 2])\nplot_gradient_flow(report)"})
    assert "calls a plot function" in E.figure_problems(nb)[0]
    nb["cells"][-1]["source"] = "plt.close('all')\nplt.rcParams['figure.dpi'] = 100"
    assert E.figure_problems(nb) == []


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_course_notebook_student_edition_has_no_answers(path):
    nb = _nb(path)
    student = E.student_edition(nb)
    assert E.answer_leaks(student, nb) == []
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    inst = E.instructor_edition(nb)
    assert [_src(c) for c in inst["cells"] if c["cell_type"] == "code"] == \
        [_src(c) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(scope="module")
def executed_fixture(tmp_path_factory, monkeypatch_module):
    # What the Makefile exported before: a kernel that inherited it kept every figure to itself.
    monkeypatch_module.setenv("MPLBACKEND", "Agg")
    out = {}
    for name in E.EDITIONS:
        node = nbformat.reads(json.dumps(E.edition(_nb(), name)), as_version=4)
        execute(node, FIXTURE.parent)
        out[name] = node
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _remote_loads(html: str) -> list[str]:
    """Scripts, style sheets and imports of a page that would come from the network."""
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html)
    found = [t for t in tags if re.search(r"(?:src|href)=[\"']?(?:https?:)?//", t)]
    found += re.findall(r"^\s*import\s+\w+\s+from\s+['\"]https?://[^'\"]+", html, flags=re.M)
    found += re.findall(r"@import\s+url\([\"']?https?://[^)]+\)", html)
    return found


def _stdout(nb) -> str:
    return "".join("".join(o.get("text", "")) for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


@pytest.mark.notebook
def test_both_editions_execute_and_the_student_one_is_not_answered_yet(executed_fixture):
    student, inst = executed_fixture["student"], executed_fixture["instructor"]
    assert "not answered yet" in _stdout(student) and "correct" not in _stdout(student)
    assert "not answered yet" not in _stdout(inst) and _stdout(inst).count("correct") == 2
    assert summaries(student) == summaries(inst) == {"max_dsigmoid": 0.25}


@pytest.mark.notebook
def test_figures_render_inline_even_under_mplbackend_agg(executed_fixture):
    for nb in executed_fixture.values():
        assert E.figure_problems(nb) == []
        assert sum(E.has_image(c) for c in nb.cells) == len(_by_tag(nb, E.FIGURE)) == 2


@pytest.mark.notebook
def test_fixture_page_and_decks_render_in_chromium(executed_fixture, tmp_path):
    if find_chromium() is None:
        pytest.skip("no Chromium installed (make browser, or apt-get install chromium): "
                    "the page is not opened")
    assert (VENDOR / "require.js").is_file(), "run `make vendor` first (offline scripts)"
    inst = executed_fixture["instructor"]
    page = write_html(inst, tmp_path / "pages" / "fixture.html", vendor=VENDOR)
    decks = [write_slides(E.slides_edition(inst, t), tmp_path / "slides" / t / "f.slides.html",
                          vendor=VENDOR) for t in sorted(E.TIMELINES)]
    for built in (page, *decks):
        assert _remote_loads(built.read_text()) == [], f"{built.name} loads from the network"
    checks = check_pages([page, *decks], screenshots=tmp_path / "shots")
    for check in checks:
        assert check.errors == [], check
        assert check.shown == check.images > 0, check
        assert check.screenshot.stat().st_size > 5000
    page_check, deck_2h, deck_3h = checks
    assert page_check.slides == -1 and page_check.images == 2
    assert len(page_check.figures) == 2 and all(f.stat().st_size > 2000 for f in page_check.figures)
    assert deck_2h.images == 1 and deck_3h.images == 2  # the optional figure is a 3-hour one
    assert 0 < deck_2h.slides < deck_3h.slides
    assert 'class="notes"' in decks[1].read_text()
