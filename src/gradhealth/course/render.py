"""HTML pages and reveal.js slides of executed notebooks that work offline.

nbconvert's pages load require.js, jQuery, MathJax and reveal.js from CDNs; a lecture hall
without network (and the headless check in the tests) then gets a page with errors and no
slides. ``make vendor`` downloads two pip packages that ship those scripts (with pip, no
install: ``sphinx-revealjs`` carries reveal.js, ``nbclassic`` carries require.js, jQuery and
MathJax 2) and :func:`unpack_vendor` copies the needed files into ``build/vendor``. The pages
written here point at that folder with relative links, so ``build/`` (or the built site) can be
copied to a USB stick and opened from disk.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from gradhealth._internal.io import atomic_write_text

__all__ = [
    "DEFAULT_VENDOR",
    "MATHJAX_CONFIG",
    "MATHJAX_SETUP",
    "REVEAL_THEME",
    "VENDOR_PACKAGES",
    "asset_urls",
    "relocate_assets",
    "unpack_vendor",
    "write_html",
    "write_slides",
]

#: Where ``make vendor`` unpacks the scripts (relative to the repository root).
DEFAULT_VENDOR = Path("build/vendor")
#: Pip packages (pinned: the file layout below is theirs) and, for each, the members copied
#: out of its wheel: ``{prefix inside the wheel: folder or file under the vendor folder}``.
#: sphinx-revealjs 3.2.1 ships reveal.js 5.2.0 (its ``dist/`` and ``plugin/`` are what
#: nbconvert's reveal template loads); nbclassic 1.3.3 ships the require.js, jQuery and MathJax
#: 2.7 that nbconvert's templates default to from cdnjs.
VENDOR_PACKAGES: dict[str, dict[str, str]] = {
    "sphinx-revealjs==3.2.1": {
        "sphinx_revealjs/_static/revealjs/dist/": "reveal.js/dist/",
        "sphinx_revealjs/_static/revealjs/plugin/": "reveal.js/plugin/",
        "sphinx_revealjs/_static/revealjs/LICENSE": "reveal.js/LICENSE",
    },
    "nbclassic==1.3.3": {
        "nbclassic/static/components/requirejs/require.js": "require.js",
        "nbclassic/static/components/jquery/jquery.min.js": "jquery.min.js",
        "nbclassic/static/components/MathJax/": "MathJax/",
    },
}
#: MathJax 2 configuration file of the vendored copy. nbconvert's default,
#: ``TeX-AMS_CHTML-full``, needs web fonts that nbclassic's trimmed copy lacks; the pages set
#: the same TeX set-up inline (:data:`MATHJAX_SETUP`) and only ``Safe`` is loaded by name.
MATHJAX_CONFIG = "Safe"
#: reveal.js theme of the slides: ``white`` uses the fonts reveal.js ships (several other
#: themes, nbconvert's default ``simple`` among them, load Google Fonts).
REVEAL_THEME = "white"
#: The vendored MathJax draws SVG with its STIX-Web glyphs: SVG output loads no web fonts (the
#: only fonts nbclassic ships are STIX-Web's), so a page opened from disk has no font errors.
MATHJAX_SETUP = {
    "jax": ["input/TeX", "output/SVG"],
    "extensions": ["tex2jax.js", "MathMenu.js", "MathZoom.js"],
    "TeX": {"extensions": ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]},
    "SVG": {"font": "STIX-Web"},
}

# MathJax 2 reads a ``window.MathJax`` object set before it loads as its configuration.
_OFFLINE_MATHJAX = (
    "{%- block html_head_js_mathjax -%}<script>window.MathJax = "
    + json.dumps(MATHJAX_SETUP) + ";</script>{{ super() }}"
    "{%- endblock html_head_js_mathjax -%}\n"
)
_HTML_TEMPLATE = "{%- extends 'index.html.j2' -%}\n" + _OFFLINE_MATHJAX
# nbconvert's reveal template imports mermaid from a CDN on every page; the course has no
# mermaid diagrams, so the slides leave it out (the lab template loads it only when needed).
_SLIDES_TEMPLATE = _HTML_TEMPLATE + (
    "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
)


def unpack_vendor(wheels: str | Path, dest: str | Path = DEFAULT_VENDOR) -> Path:
    """Copy the scripts of :data:`VENDOR_PACKAGES` out of downloaded wheels.

    Args:
        wheels: Folder holding the ``.whl`` files (``pip download --no-deps``).
        dest: The vendor folder to fill (replaced whole, through a temporary folder).

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        FileNotFoundError: A wheel of :data:`VENDOR_PACKAGES` is missing from ``wheels``, or
            lacks a member listed there (names the wheel and the member).
    """
    wheels, dest = Path(wheels), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for requirement, members in VENDOR_PACKAGES.items():
        name, version = requirement.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = sorted(wheels.glob(stem + "*.whl"))
        if not found:
            raise FileNotFoundError(f"no wheel {stem}*.whl in {wheels} (run `make vendor`)")
        with zipfile.ZipFile(found[0]) as wheel:
            names = wheel.namelist()
            for prefix, target in members.items():
                picked = [n for n in names if n == prefix or
                          (prefix.endswith("/") and n.startswith(prefix) and not n.endswith("/"))]
                if not picked:
                    raise FileNotFoundError(f"{found[0].name} has no {prefix}")
                for member in picked:
                    out = tmp / (target + member[len(prefix):] if prefix.endswith("/") else target)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(wheel.read(member))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def asset_urls(page: str | Path, vendor: str | Path | None = DEFAULT_VENDOR) -> dict[str, str]:
    """Exporter settings that load the scripts from the vendor folder, relative to a page.

    Args:
        page: The HTML file that will be written.
        vendor: The vendor folder; when None or absent, nothing is overridden (nbconvert's CDN
            defaults are used).

    Returns:
        Keyword arguments for nbconvert's ``HTMLExporter``/``SlidesExporter``:
        ``require_js_url``, ``jquery_url``, ``mathjax_url`` and ``reveal_url_prefix``.
    """
    if vendor is None or not (Path(vendor) / "require.js").is_file():
        return {}
    rel = Path(os.path.relpath(Path(vendor).resolve(), Path(page).resolve().parent)).as_posix()
    return {
        "require_js_url": f"{rel}/require.js",
        "jquery_url": f"{rel}/jquery.min.js",
        "mathjax_url": f"{rel}/MathJax/MathJax.js?config={MATHJAX_CONFIG}",
        "reveal_url_prefix": f"{rel}/reveal.js",
    }


def relocate_assets(page: str | Path, written_at: str | Path, vendor: str | Path,
                    new_vendor: str | Path) -> Path:
    """Point a page copied elsewhere at the vendor folder that sits beside its new place.

    A page written by :func:`write_html` or :func:`write_slides` links to the vendor folder by
    a path relative to where it was written. Copied into the site (``slides/3h/``, with the
    scripts in ``vendor/``), that path leads nowhere; this rewrites it in place.

    Args:
        page: The copied page (rewritten atomically).
        written_at: Where the page was written (its links are relative to that place).
        vendor: The vendor folder it was written against.
        new_vendor: The vendor folder it should load from now.

    Returns:
        ``page`` as a ``Path``.

    Raises:
        FileNotFoundError: ``page`` does not exist.
    """
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    old = asset_urls(written_at, vendor)
    new = asset_urls(page, new_vendor)
    if not old or not new:
        return page
    old_prefix = old["reveal_url_prefix"].removesuffix("reveal.js")
    new_prefix = new["reveal_url_prefix"].removesuffix("reveal.js")
    if old_prefix != new_prefix:
        # Only attribute values and script strings start with the prefix: quote it in.
        for quote in ('"', "'"):
            text = text.replace(quote + old_prefix, quote + new_prefix)
        atomic_write_text(page, text)
    return page


def _static_copy(nb: Any) -> Any:
    import nbformat  # lazy: the notebook extra is needed only to render notebooks

    nb = nbformat.from_dict(copy.deepcopy(dict(nb)))
    # Live widgets need their JavaScript from a CDN; their static fallback (the text or image
    # output the notebook shows without widgets) is what an offline page can show.
    nb.metadata.pop("widgets", None)
    return nb


def write_html(nb: Any, out: str | Path, vendor: str | Path | None = DEFAULT_VENDOR) -> Path:
    """Write an executed notebook as a JupyterLab-style HTML page.

    Args:
        nb: The executed notebook (``nbformat`` node).
        out: The ``.html`` file to write (atomically).
        vendor: The vendor folder (see :func:`asset_urls`).

    Returns:
        ``out`` as a ``Path``.
    """
    from nbconvert import HTMLExporter  # lazy: the notebook extra is needed only to render

    urls = asset_urls(out, vendor)
    urls.pop("reveal_url_prefix", None)
    from jinja2 import DictLoader  # lazy: comes with nbconvert, needed only to render

    template = {"template_file": "gradhealth_page.j2",
                "extra_loaders": [DictLoader({"gradhealth_page.j2": _HTML_TEMPLATE})]} if urls else {}
    exporter = HTMLExporter(template_name="lab", **template, **urls)
    body, _ = exporter.from_notebook_node(_static_copy(nb))
    return atomic_write_text(out, body)


def write_slides(nb: Any, out: str | Path, vendor: str | Path | None = DEFAULT_VENDOR) -> Path:
    """Write an executed notebook as reveal.js slides (``nbconvert --to slides``).

    Cells are placed by their ``metadata["slideshow"]["slide_type"]``; ``notes`` cells become
    speaker notes (press ``s`` in the browser).

    Args:
        nb: The executed notebook (``nbformat`` node), usually a
            :func:`gradhealth.course.editions.slides_edition`.
        out: The ``.slides.html`` file to write (atomically).
        vendor: The vendor folder (see :func:`asset_urls`).

    Returns:
        ``out`` as a ``Path``.
    """
    from jinja2 import DictLoader  # lazy: comes with nbconvert, needed only to render
    from nbconvert import SlidesExporter  # lazy: the notebook extra is needed only to render

    exporter = SlidesExporter(template_name="reveal", template_file="gradhealth_slides.j2",
                              extra_loaders=[DictLoader({"gradhealth_slides.j2": _SLIDES_TEMPLATE})],
                              reveal_scroll=True, reveal_theme=REVEAL_THEME, **asset_urls(out, vendor))
    body, _ = exporter.from_notebook_node(_static_copy(nb))
    return atomic_write_text(out, body)
