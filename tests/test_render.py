"""Offline pages keep working when they are copied: the site's decks find their scripts.

Last round the decks in the site linked to the vendor folder by the path that led there from
the test's build folder, so on a clone in another place the slides did not start. These tests
build no notebook: a deck with the same links nbconvert writes stands in for one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gradhealth.course.build import stage_site
from gradhealth.course.render import asset_urls, relocate_assets
from gradhealth.course.runner import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r'(?:src|href)="([^"]*vendor[^"?]*)|require\(\["([^"]*vendor[^"]*)"')


def _vendor(where: Path) -> Path:
    for name in ("require.js", "jquery.min.js", "MathJax/MathJax.js", "reveal.js/dist/reveal.js",
                 "reveal.js/dist/reveal.css"):
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text("/* stand-in */")
    return where


def _deck(page: Path, vendor: Path) -> Path:
    urls = asset_urls(page, vendor)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(
        f'<script src="{urls["require_js_url"]}"></script>\n'
        f'<script src="{urls["jquery_url"]}"></script>\n'
        f'<script src="{urls["mathjax_url"]}"></script>\n'
        f'<link rel="stylesheet" href="{urls["reveal_url_prefix"]}/dist/reveal.css">\n'
        f'<script>require(["{urls["reveal_url_prefix"]}/dist/reveal.js"]);</script>\n')
    return page


def _links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(page.read_text())]


def _broken_links(page: Path) -> list[str]:
    links = _links(page)
    assert len(links) == 5, links
    return [link for link in links if not (page.parent / link).resolve().is_file()]


def test_relocated_deck_loads_from_the_new_vendor_folder(tmp_path):
    vendor = _vendor(tmp_path / "far" / "away" / "build" / "vendor")
    written = _deck(tmp_path / "build" / "slides" / "3h" / "deck.slides.html", vendor)
    assert _broken_links(written) == []
    site = tmp_path / "deep" / "er" / "site"
    copied = site / "slides" / "3h" / "deck.slides.html"
    copied.parent.mkdir(parents=True)
    shutil.copy2(written, copied)
    shutil.copytree(vendor, site / "vendor")
    assert _broken_links(copied) != [], "the copy must be broken before relocation"
    relocate_assets(copied, written, vendor, site / "vendor")
    assert _broken_links(copied) == []
    assert "far/away" not in copied.read_text()
    # idempotent: relocating again against the same folder changes nothing
    before = copied.read_text()
    relocate_assets(copied, copied, site / "vendor", site / "vendor")
    assert copied.read_text() == before


def test_relocate_without_vendor_leaves_the_page_alone(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<script src="https://cdn/require.js"></script>')
    relocate_assets(page, page, tmp_path / "no-vendor", tmp_path / "none-either")
    assert page.read_text() == '<script src="https://cdn/require.js"></script>'
    with pytest.raises(FileNotFoundError):
        relocate_assets(tmp_path / "missing.html", page, tmp_path, tmp_path)


def test_staged_site_decks_find_their_scripts_wherever_the_build_was(tmp_path):
    vendor = _vendor(tmp_path / "checkout" / "build" / "vendor")
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in NOTEBOOKS:
        if (ROOT / "notebooks" / name).is_file():
            shutil.copy2(ROOT / "notebooks" / name, executed / name)
    slides = tmp_path / "t" / "m" / "p" / "slides"
    for timeline in ("2h", "3h"):
        _deck(slides / timeline / "1_vanishing_gradients_demonstration.slides.html", vendor)
    out = stage_site(ROOT, executed, slides, tmp_path / "a" / "b" / "c" / "src", vendor=vendor)
    decks = sorted((out / "slides").glob("*/*.slides.html"))
    assert len(decks) == 2
    for deck in decks:
        assert _broken_links(deck) == [], deck
        # relative links: mkdocs copies the site folder as a whole
        assert all(not link.startswith("/") for link in _links(deck))
