"""The documentation site: built strict with mkdocs from the executed notebooks, opened in Chromium.

The site is staged like ``make docs`` does (gradhealth.course.build.stage_site) from the course
build shared with test_notebooks.py, so no notebook runs again here. Strict mode is shown to
fail on a broken link and on a missing API target.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _course_build import VENDOR, course_build

from gradhealth.course.browser import check_pages, find_chromium
from gradhealth.course.build import stage_site
from gradhealth.course.runner import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "mkdocs.yml"

pytestmark = pytest.mark.notebook


def _config(docs: Path, site: Path) -> dict:
    config = yaml.safe_load(CONFIG.read_text())
    config["docs_dir"], config["site_dir"] = str(docs), str(site)
    python = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    python["paths"] = [str(ROOT / p) for p in python["paths"]]
    options = python["options"]
    options["extensions"] = [str(ROOT / e) for e in options.get("extensions", [])]
    return config


def _mkdocs(config: dict, where: Path) -> subprocess.CompletedProcess:
    path = where / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    build = course_build()
    missing = sorted(set(n for n in NOTEBOOKS if (ROOT / "notebooks" / n).exists())
                     - set(build.executed))
    if missing:
        pytest.fail(f"notebooks that did not execute: {missing}")
    tmp = tmp_path_factory.mktemp("site")
    docs = stage_site(ROOT, build.notebooks, build.slides, tmp / "src", vendor=VENDOR)
    done = _mkdocs(_config(docs, tmp / "site"), tmp)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return tmp / "site"


def test_site_holds_guide_notebooks_slides_lecture_notes_and_api(site):
    for page in ("index.html", "SETUP_GUIDE.html", "lecture_notes.html", "slides.html",
                 "api.html", "docs/ARCHITECTURE.html", "slides/index.html"):
        assert (site / page).is_file(), page
    for name in NOTEBOOKS:
        page = site / "notebooks" / Path(name).with_suffix(".html").name
        assert page.is_file(), page
        assert re.search(r"<img[^>]+src=\"data:image/png;base64,", page.read_text()), \
            f"{page.name} has no figure"
    api = (site / "api.html").read_text()
    for target in ("gradhealth.diagnosis.checkup.checkup", "gradhealth.course.editions.student_edition",
                   "gradhealth.course.runner.run_notebook"):
        assert f'id="{target}"' in api, f"{target} is not in the API reference"
    assert "Gradient Problems in Deep Networks" in (site / "index.html").read_text()
    for deck in (site / "slides").glob("*/*.slides.html"):
        assert (deck.parent / "../../vendor/reveal.js/dist/reveal.js").resolve().is_file()


def test_site_pages_render_offline_in_chromium(site, tmp_path):
    if find_chromium() is None:
        pytest.skip("no Chromium installed (make browser, or apt-get install chromium): "
                    "the site is not opened")
    pages = [site / "index.html", site / "api.html", site / "slides.html",
             site / "notebooks" / "1_vanishing_gradients_demonstration.html",
             site / "slides" / "3h" / "1_vanishing_gradients_demonstration.slides.html"]
    for check in check_pages(pages, screenshots=tmp_path):
        assert check.errors == [], f"{check.page}: {check.errors}"
        assert check.shown == check.images, f"{check.page}: images that did not load"
    nb1 = check_pages([pages[3]])[0]
    assert nb1.images >= 1


@pytest.mark.parametrize("broken", ["nothing", "link", "api"])
def test_strict_build_fails_on_a_broken_link_or_a_missing_api_target(broken, tmp_path):
    docs = tmp_path / "src"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the API](api.md).\n" +
                                   ("See [the missing page](missing.md).\n" if broken == "link"
                                    else ""))
    (docs / "api.md").write_text("# API\n\n::: gradhealth.course.runner.summary\n" +
                                 ("\n::: gradhealth.course.no_such_module\n" if broken == "api"
                                  else ""))
    config = _config(docs, tmp_path / "site")
    config["nav"] = [{"Home": "index.md"}, {"API": "api.md"}]
    config["plugins"] = [p for p in config["plugins"] if "mkdocstrings" in p]
    done = _mkdocs(config, tmp_path)
    if broken == "nothing":
        assert done.returncode == 0, done.stdout + done.stderr
        return
    assert done.returncode != 0, "strict mode let a broken site through"
    said = done.stdout + done.stderr
    assert ("missing.md" in said) if broken == "link" else ("no_such_module" in said)
