"""Student edition, instructor edition and slide decks from one committed notebook.

The committed notebooks hold everything; cell tags (``cell.metadata["tags"]``) say who sees what:

========================  ================================================================
tag                       meaning
========================  ================================================================
``solution``              an exercise's answer. The student edition replaces its source with
                          ``cell.metadata["gradhealth"]["student"]`` when present, else with
                          :data:`STUDENT_PLACEHOLDER` (code) or :data:`STUDENT_MARKDOWN` (text).
``instructor``            removed from the student edition (reference solutions, answer keys,
                          asserts of the instructor kind); skipped in the slides.
``speaker-notes``         markdown kept only in the instructor edition; speaker notes in the
                          slides (reveal.js, key ``s``).
``optional``              left out of the 2-hour timeline's slides (:data:`TIMELINES`).
``figure``                must show a figure once executed (:func:`figure_problems`).
========================  ================================================================

Slides are placed by ``cell.metadata["slideshow"]["slide_type"]`` (``slide``, ``subslide``,
``fragment``, ``-``, ``skip``, ``notes``), as Jupyter's slideshow cell toolbar writes it.

The functions work on ``nbformat`` notebook nodes or plain JSON dicts and never change their
argument: each returns a new notebook.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = [
    "EDITIONS",
    "FIGURE",
    "INSTRUCTOR",
    "KEEPS_OPTIONAL",
    "OPTIONAL",
    "PLOTTING_CALL",
    "SOLUTION",
    "SPEAKER_NOTES",
    "STUDENT_MARKDOWN",
    "STUDENT_PLACEHOLDER",
    "TIMELINES",
    "answer_leaks",
    "edition",
    "figure_problems",
    "has_image",
    "instructor_edition",
    "slides_edition",
    "student_edition",
    "tags",
]

SOLUTION = "solution"
INSTRUCTOR = "instructor"
SPEAKER_NOTES = "speaker-notes"
OPTIONAL = "optional"
FIGURE = "figure"
#: Source of a ``solution`` code cell in the student edition when the cell carries no
#: ``metadata["gradhealth"]["student"]`` stub: the checkers read ``None`` as "not answered yet".
STUDENT_PLACEHOLDER = "answer = None  # your answer here"
#: Source of a ``solution`` markdown cell (a written answer) in the student edition.
STUDENT_MARKDOWN = "**Your answer:** *(write it here)*"
EDITIONS: tuple[str, ...] = ("student", "instructor")
#: The seed's two lecture timelines: minutes per notebook (the course description's tables;
#: the 2-hour session covers notebooks 1-4 and leaves ``optional`` cells out, the 3-hour
#: session covers all six with every cell).
TIMELINES: dict[str, dict[str, int]] = {
    "2h": {"1_vanishing_gradients_demonstration.ipynb": 25,
           "2_gradient_health_monitoring.ipynb": 25,
           "3_gradient_explosion_detection.ipynb": 20,
           "4_activation_functions_analysis.ipynb": 30},
    "3h": {"1_vanishing_gradients_demonstration.ipynb": 25,
           "2_gradient_health_monitoring.ipynb": 30,
           "3_gradient_explosion_detection.ipynb": 25,
           "4_activation_functions_analysis.ipynb": 30,
           "5_weight_initialization_strategies.ipynb": 35,
           "6_gradient_solutions_summary.ipynb": 20},
}
#: Timelines whose slides keep the ``optional`` cells.
KEEPS_OPTIONAL: frozenset[str] = frozenset({"3h"})
#: A code line that draws: ``plt.<call>(`` (except state-only calls), ``.plot(`` or a
#: ``plot_*(`` helper. Such a cell must leave an image in its outputs.
PLOTTING_CALL = re.compile(
    r"\bplt\.(?!close\b|rcParams\b|style\b|ioff\b|ion\b|rc\b|switch_backend\b)\w+\s*\("
    r"|\.plot\s*\(|\bplot_\w*\s*\("
)
_IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")


def tags(cell: Any) -> set[str]:
    """The tags of a cell (``cell.metadata["tags"]``), as a set."""
    return set(cell.get("metadata", {}).get("tags", []) or [])


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _fresh(nb: Any, name: str) -> Any:
    out = copy.deepcopy(nb)
    out["metadata"].setdefault("gradhealth", {})["edition"] = name
    return out


def _clear(cell: Any) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None


def student_edition(nb: Any) -> Any:
    """The notebook a student receives: no answers, no instructor material, no outputs.

    Args:
        nb: The committed notebook.

    Returns:
        A new notebook: ``instructor`` and ``speaker-notes`` cells removed, each ``solution``
        cell's source replaced by its student stub, every output cleared.
    """
    out = _fresh(nb, "student")
    cells = []
    for cell in out["cells"]:
        t = tags(cell)
        if t & {INSTRUCTOR, SPEAKER_NOTES}:
            continue
        if SOLUTION in t:
            meta = cell.get("metadata", {}).get("gradhealth", {})
            stub = meta.get("student") if isinstance(meta, dict) else None
            if stub is None:
                stub = STUDENT_PLACEHOLDER if cell.get("cell_type") == "code" else STUDENT_MARKDOWN
            cell["source"] = "".join(stub) if isinstance(stub, list) else str(stub)
        _clear(cell)
        cells.append(cell)
    out["cells"] = cells
    return out


def instructor_edition(nb: Any) -> Any:
    """The instructor's notebook: every cell, answers and speaker notes included.

    Code cells are the committed ones, unchanged, so an executed committed notebook (``make
    demo``) is an executed instructor edition; only the speaker notes are marked as such.

    Args:
        nb: The committed notebook (executed or not: outputs are kept).

    Returns:
        A new notebook whose ``speaker-notes`` cells start with a "Speaker notes" label.
    """
    out = _fresh(nb, "instructor")
    for cell in out["cells"]:
        if SPEAKER_NOTES in tags(cell) and cell.get("cell_type") == "markdown":
            text = _source(cell)
            if not text.startswith("> **Speaker notes"):
                cell["source"] = "> **Speaker notes.** " + text.replace("\n", "\n> ")
    return out


def slides_edition(nb: Any, timeline: str = "3h") -> Any:
    """A deck for one lecture timeline, from an executed instructor edition.

    Args:
        nb: The executed notebook (outputs are kept; nothing is run again).
        timeline: A key of :data:`TIMELINES`: ``"2h"`` leaves ``optional`` cells out.

    Returns:
        A new notebook for ``nbconvert --to slides``: ``speaker-notes`` cells become speaker
        notes, ``instructor`` cells are skipped. A notebook with no slide metadata gets a slide
        at each markdown cell that opens with a heading.

    Raises:
        ValueError: ``timeline`` is not a key of :data:`TIMELINES`.
    """
    if timeline not in TIMELINES:
        raise ValueError(f"timeline must be one of {sorted(TIMELINES)}, got {timeline!r}")
    out = _fresh(nb, f"slides-{timeline}")
    keep_optional = timeline in KEEPS_OPTIONAL
    has_layout = any(c.get("metadata", {}).get("slideshow", {}).get("slide_type")
                     for c in out["cells"])
    cells = []
    for cell in out["cells"]:
        t = tags(cell)
        if OPTIONAL in t and not keep_optional:
            continue
        show = cell.setdefault("metadata", {}).setdefault("slideshow", {})
        if SPEAKER_NOTES in t:
            show["slide_type"] = "notes"
        elif INSTRUCTOR in t:
            show["slide_type"] = "skip"
        elif not has_layout and cell.get("cell_type") == "markdown" and \
                _source(cell).lstrip().startswith("#"):
            show["slide_type"] = "slide"
        cells.append(cell)
    out["cells"] = cells
    return out


def edition(nb: Any, name: str) -> Any:
    """:func:`student_edition` or :func:`instructor_edition` by name.

    Args:
        nb: The committed notebook.
        name: ``"student"`` or ``"instructor"``.

    Returns:
        The new notebook.

    Raises:
        ValueError: ``name`` is not in :data:`EDITIONS`.
    """
    if name == "student":
        return student_edition(nb)
    if name == "instructor":
        return instructor_edition(nb)
    raise ValueError(f"name must be one of {EDITIONS}, got {name!r}")


def has_image(cell: Any) -> bool:
    """Whether an executed code cell shows an image (PNG, SVG or JPEG output)."""
    return any(kind in output.get("data", {}) for output in cell.get("outputs", [])
               for kind in _IMAGE_TYPES)


def figure_problems(nb: Any) -> list[str]:
    """Plotting cells of an executed notebook that show no figure.

    Args:
        nb: The executed notebook.

    Returns:
        One line per code cell tagged ``figure``, or calling a plot function
        (:data:`PLOTTING_CALL`), that has no image output; empty when every figure is there.
    """
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        tagged = FIGURE in tags(cell)
        plots = bool(PLOTTING_CALL.search(src))
        if (tagged or plots) and not has_image(cell):
            why = "tagged 'figure'" if tagged else "calls a plot function"
            first = next((ln for ln in src.splitlines() if ln.strip()), "")[:60]
            problems.append(f"cell {i} ({why}) shows no image: {first!r}")
    return problems


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def answer_leaks(student: Any, source: Any) -> list[str]:
    """Answers or instructor material of ``source`` that are still in a student edition.

    Args:
        student: The student edition (executed or not).
        source: The committed notebook it was made from.

    Returns:
        One line per leak: a cell tagged ``instructor`` or ``speaker-notes``, or a cell whose
        source contains a ``solution`` cell's committed source. Empty when nothing leaks.
    """
    leaks = []
    for i, cell in enumerate(student["cells"]):
        if tags(cell) & {INSTRUCTOR, SPEAKER_NOTES}:
            leaks.append(f"cell {i} is tagged {sorted(tags(cell) & {INSTRUCTOR, SPEAKER_NOTES})}")
    texts = [_normalized(_source(c)) for c in student["cells"]]
    for j, cell in enumerate(source["cells"]):
        if SOLUTION not in tags(cell) and INSTRUCTOR not in tags(cell):
            continue
        answer = _normalized(_source(cell))
        stub = cell.get("metadata", {}).get("gradhealth", {}).get("student")
        stub = _normalized("".join(stub) if isinstance(stub, list) else stub or "")
        if not answer or answer == stub:
            continue
        for i, text in enumerate(texts):
            if answer in text:
                leaks.append(f"cell {i} holds the source of committed cell {j}: {answer[:50]!r}")
    return leaks
