"""One build of the course per test process, shared by test_notebooks.py and test_site.py.

Each committed notebook is executed twice, once as committed (what ``make demo`` runs, i.e. the
instructor edition's code) and once as the student edition; the HTML pages, the decks of both
timelines and the site are all made from those outputs, nothing is executed again. The two runs
are independent kernels, so comparing their summaries is also the reproducibility check.
"""

from __future__ import annotations

import functools
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from gradhealth.course.build import write_slides_index
from gradhealth.course.editions import TIMELINES, slides_edition, student_edition
from gradhealth.course.editions import instructor_edition as instructor
from gradhealth.course.render import DEFAULT_VENDOR, write_html, write_slides
from gradhealth.course.runner import NOTEBOOKS, execute

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / DEFAULT_VENDOR
SOURCES = [ROOT / "notebooks" / n for n in NOTEBOOKS if (ROOT / "notebooks" / n).exists()]


@dataclass
class CourseBuild:
    root: Path
    executed: dict[str, Any] = field(default_factory=dict)   # name -> executed committed nb
    student: dict[str, Any] = field(default_factory=dict)    # name -> executed student edition
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)     # "name" or "name (student)" -> error

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def slides(self) -> Path:
        return self.root / "slides"


def _run(nb: Any, build: CourseBuild, key: str) -> bool:
    try:
        build.seconds[key] = execute(nb, ROOT / "notebooks")
        return True
    except Exception:  # noqa: BLE001 - recorded; the test of that notebook reports it
        build.errors[key] = traceback.format_exc(limit=3)[-3000:]
        return False


@functools.cache
def course_build() -> CourseBuild:
    """Execute and render the course once (see the module docstring)."""
    build = CourseBuild(Path(tempfile.mkdtemp(prefix="gradhealth-course-")))
    vendor = VENDOR if (VENDOR / "require.js").is_file() else None
    for path in SOURCES:
        name = path.name
        source = nbformat.read(path, as_version=4)
        committed = nbformat.from_dict(source)
        if _run(committed, build, name):
            build.executed[name] = committed
            (build.notebooks / name).parent.mkdir(parents=True, exist_ok=True)
            (build.notebooks / name).write_text(nbformat.writes(committed))
            write_html(committed, build.notebooks / path.with_suffix(".html").name, vendor=vendor)
            for timeline, minutes in TIMELINES.items():
                if name in minutes:
                    write_slides(slides_edition(instructor(committed), timeline),
                                 build.slides / timeline / f"{path.stem}.slides.html",
                                 vendor=vendor)
        student = nbformat.from_dict(student_edition(source))
        if _run(student, build, f"{name} (student)"):
            build.student[name] = student
    write_slides_index(build.slides)
    return build
