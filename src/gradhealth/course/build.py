"""``python -m gradhealth.course``: the course's build steps, one sub-command each.

============  ==================================================================================
command       writes
============  ==================================================================================
``run``       executed notebooks and their HTML pages (``make demo``: ``build/notebooks``)
``edition``   ``build/student`` (answers removed, no outputs) or ``build/instructor`` (executed)
``slides``    reveal.js decks per timeline (``build/slides/{2h,3h}``) and an index page
``vendor``    the offline scripts of the pages (``build/vendor``) from downloaded wheels
``pages``     opens HTML pages in headless Chromium; screenshots in ``build/screenshots``
``site-src``  the documentation site's source folder for ``mkdocs build`` (``make docs``)
============  ==================================================================================

Every step that needs executed notebooks reuses those of ``run`` when they are up to date
(newer than the committed notebook, same code): the instructor edition and the decks run the
committed code unchanged, so nothing is executed twice.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from gradhealth._internal.io import atomic_write_text
from gradhealth.course.browser import check_pages, find_chromium
from gradhealth.course.editions import (
    TIMELINES,
    edition,
    figure_problems,
    slides_edition,
)
from gradhealth.course.render import (
    DEFAULT_VENDOR,
    MATHJAX_SETUP,
    relocate_assets,
    unpack_vendor,
    write_html,
    write_slides,
)
from gradhealth.course.runner import NOTEBOOKS, execute, summaries

__all__ = ["COMMANDS", "executed_notebook", "main", "stage_site", "write_slides_index"]

#: Sub-commands of ``python -m gradhealth.course`` (``run`` when none is given).
COMMANDS: tuple[str, ...] = ("run", "edition", "slides", "vendor", "pages", "site-src")


def _read(path: Path) -> Any:
    import nbformat  # lazy: the notebook extra is needed only to build the course

    return nbformat.read(path, as_version=4)


def _write(nb: Any, path: Path) -> Path:
    import nbformat  # lazy: as in _read

    return atomic_write_text(path, nbformat.writes(nb))


def _code(nb: Any) -> list[str]:
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def executed_notebook(source: str | Path, executed_dir: str | Path | None = None,
                      kernel_name: str = "python3") -> tuple[Any, float | None]:
    """The committed notebook, executed: reused from ``executed_dir`` when up to date.

    Args:
        source: The committed ``.ipynb``.
        executed_dir: Folder of a previous ``run`` (e.g. ``build/notebooks``), or None.
        kernel_name: Kernel used when the notebook has to run.

    Returns:
        The executed notebook and the seconds its run took (None when reused).

    Raises:
        nbclient.exceptions.CellExecutionError: A cell failed.
    """
    source = Path(source)
    if executed_dir is not None:
        done = Path(executed_dir) / source.name
        if done.is_file() and done.stat().st_mtime >= source.stat().st_mtime:
            nb = _read(done)
            if _code(nb) == _code(_read(source)) and all(
                    c.get("execution_count") is not None for c in nb.cells
                    if c.cell_type == "code" and "".join(c.source).strip()):
                return nb, None
    nb = _read(source)
    return nb, execute(nb, source.parent, kernel_name=kernel_name)


def _sources(folder: Path, names: list[str] | None = None) -> list[Path]:
    wanted = names or list(NOTEBOOKS)
    return [folder / n for n in wanted if (folder / n).is_file()]


def _cmd_run(args: argparse.Namespace) -> int:
    paths = _sources(Path(args.notebooks))
    if not paths:
        print(f"no course notebooks found in {args.notebooks}")
        return 1
    failed, total = 0, 0.0
    for path in paths:
        try:
            nb = _read(path)
            seconds = execute(nb, path.parent, kernel_name=args.kernel)
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            failed += 1
            print(f"FAILED {path.name}: {type(e).__name__}: {str(e).splitlines()[-1][:200]}")
            continue
        out = Path(args.out)
        _write(nb, out / path.name)
        write_html(nb, out / path.with_suffix(".html").name, vendor=args.vendor)
        total += seconds
        images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in
                     o.get("data", {}))
        print(f"ok     {path.name:<48} {seconds:6.1f} s  {images:3d} figures  "
              f"{len(summaries(nb)):3d} summary values")
        for problem in figure_problems(nb):
            print(f"       WARNING {problem}")
    print(f"{len(paths) - failed}/{len(paths)} notebooks executed in {total:.1f} s -> {args.out}")
    return 1 if failed else 0


def _cmd_edition(args: argparse.Namespace) -> int:
    import nbformat  # lazy: the notebook extra is needed only to build the course

    out = Path(args.out)
    for path in _sources(Path(args.notebooks)):
        target = out / path.name
        if args.name == "student" and target.is_file() and not args.force and \
                nbformat.writes(edition(_read(path), "student")) != target.read_text():
            # a student's own work is never overwritten
            print(f"{args.name:<10} {path.name:<48} kept: edited since it was written "
                  "(--force replaces it)")
            continue
        if args.name == "student":
            nb = edition(_read(path), "student")
            note = "answers removed"
            if args.execute:
                seconds = execute(nb, path.parent, kernel_name=args.kernel)
                note += f", executed in {seconds:.1f} s"
        else:
            executed, seconds = executed_notebook(path, args.executed, kernel_name=args.kernel)
            nb = edition(executed, "instructor")
            note = "executed" if seconds is None else f"executed in {seconds:.1f} s"
            note += " (reused)" if seconds is None else ""
        _write(nb, out / path.name)
        if args.html:
            write_html(nb, out / path.with_suffix(".html").name, vendor=args.vendor)
        print(f"{args.name:<10} {path.name:<48} {note}")
    print(f"{args.name} edition -> {out}")
    return 0


def write_slides_index(out: str | Path) -> Path:
    """Write ``index.html`` of a slides folder: the decks of each timeline with their minutes.

    Args:
        out: The slides folder (``build/slides``), holding ``2h/`` and ``3h/``.

    Returns:
        The index page's path.
    """
    out = Path(out)
    return atomic_write_text(out / "index.html", _slides_index(out))


def _slides_index(out: Path) -> str:
    rows = []
    for timeline, minutes in TIMELINES.items():
        total = sum(minutes.values())
        items = "".join(
            f'<li><a href="{timeline}/{Path(n).stem}.slides.html">{html.escape(Path(n).stem)}'
            f"</a> ({m} min)</li>" for n, m in minutes.items()
            if (out / timeline / f"{Path(n).stem}.slides.html").is_file())
        rows.append(f"<h2>{timeline[:-1]}-hour session ({total} min of notebooks)</h2>"
                    f"<ol>{items}</ol>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Week 5 slides</title></head><body><h1>Week 5: Gradient Problems in Deep "
            "Networks, slides</h1><p>Press <kbd>s</kbd> in a deck for the speaker notes, "
            "<kbd>Esc</kbd> for the overview. The 2-hour decks leave the optional cells out."
            f"</p>{''.join(rows)}</body></html>\n")


def _cmd_slides(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for path in _sources(Path(args.notebooks)):
        executed, _ = executed_notebook(path, args.executed, kernel_name=args.kernel)
        nb = edition(executed, "instructor")
        for timeline, minutes in TIMELINES.items():
            if path.name not in minutes:
                continue
            deck = out / timeline / f"{path.stem}.slides.html"
            write_slides(slides_edition(nb, timeline), deck, vendor=args.vendor)
            print(f"slides {timeline} {deck}")
    print(f"slides -> {write_slides_index(out)}")
    return 0


def _cmd_vendor(args: argparse.Namespace) -> int:
    dest = unpack_vendor(args.wheels, args.out)
    print(f"vendored scripts -> {dest}")
    return 0


def _cmd_pages(args: argparse.Namespace) -> int:
    if find_chromium() is None:
        print("SKIPPED the browser check: no Chromium here (Debian: apt-get install chromium; "
              "or set GRADHEALTH_CHROMIUM)")
        return 0
    pages = [Path(p) for p in args.pages]
    bad = 0
    for check in check_pages(pages, screenshots=args.screenshots):
        state = "ok    " if not check.errors and check.shown == check.images else "FAILED"
        bad += state != "ok    "
        print(f"{state} {check.page}  {check.shown}/{check.images} images"
              f"{'' if check.slides < 0 else f', {check.slides} slides'}"
              f"{f' -> {check.screenshot}' if check.screenshot else ''}"
              f"{f' (+{len(check.figures)} figure PNGs)' if check.figures else ''}")
        for error in check.errors:
            print(f"       {error}")
    return 1 if bad else 0


def stage_site(root: str | Path, executed: str | Path, slides: str | Path, out: str | Path,
               vendor: str | Path = DEFAULT_VENDOR) -> Path:
    """Lay out the documentation site's source folder for ``mkdocs build``.

    The README stays the home page, and the files it links to keep their relative places
    (``SETUP_GUIDE.md``, ``lecture_notes.md``, ``docs/ARCHITECTURE.md``), so its links work
    on the site unchanged. ``docs/site/*.md`` (API reference, slides page) are copied beside
    them, the executed notebooks into ``notebooks/``, the decks into ``slides/`` and the
    vendored scripts into ``vendor/``.

    Args:
        root: The repository root.
        executed: Folder of executed notebooks (``build/notebooks``).
        slides: Folder of the decks (``build/slides``).
        out: The folder to (re)create.
        vendor: The vendored scripts the decks load.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        FileNotFoundError: A course notebook has no executed copy in ``executed``.
    """
    root, out = Path(root), Path(out)
    missing = [n for n in NOTEBOOKS if (root / "notebooks" / n).is_file() and
               not (Path(executed) / n).is_file()]
    if missing:
        raise FileNotFoundError(f"not executed yet (run `make demo`): {missing}")
    shutil.rmtree(out, ignore_errors=True)
    (out / "docs").mkdir(parents=True)
    shutil.copy2(root / "README.md", out / "index.md")
    for name in ("SETUP_GUIDE.md", "lecture_notes.md"):
        shutil.copy2(root / name, out / name)
    shutil.copy2(root / "docs" / "ARCHITECTURE.md", out / "docs" / "ARCHITECTURE.md")
    for page in sorted((root / "docs" / "site").glob("*.md")):
        shutil.copy2(page, out / page.name)
    (out / "notebooks").mkdir()
    for name in NOTEBOOKS:
        if (Path(executed) / name).is_file():
            shutil.copy2(Path(executed) / name, out / "notebooks" / name)
    if Path(vendor).is_dir():
        shutil.copytree(vendor, out / "vendor", ignore=shutil.ignore_patterns("*.map", "*.md"))
    if Path(slides).is_dir():
        shutil.copytree(slides, out / "slides")
        # The decks link to the vendor folder relative to where they were written.
        for deck in sorted((out / "slides").glob("*/*.slides.html")):
            relocate_assets(deck, Path(slides) / deck.relative_to(out / "slides"), vendor,
                            out / "vendor")
    # MathJax for the notebook pages and the lecture notes ($...$ as in Jupyter), from vendor/
    setup = dict(MATHJAX_SETUP, tex2jax={"inlineMath": [["$", "$"], ["\\(", "\\)"]],
                                         "displayMath": [["$$", "$$"], ["\\[", "\\]"]],
                                         "processEscapes": True},
                 messageStyle="none")
    atomic_write_text(out / "javascripts" / "mathjax-setup.js",
                      f"window.MathJax = {json.dumps(setup)};\n")
    return out


def _cmd_site_src(args: argparse.Namespace) -> int:
    out = stage_site(".", args.executed, args.slides, args.out, vendor=args.vendor)
    print(f"site source -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one build step of the course (``python -m gradhealth.course COMMAND ...``).

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``); without a command, ``run``.

    Returns:
        The exit status: 0 when the step succeeded.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "run")
    parser = argparse.ArgumentParser(prog="python -m gradhealth.course",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--notebooks", default="notebooks", help="folder of committed notebooks")
        p.add_argument("--out", default=out, help=f"output folder (default {out})")
        p.add_argument("--kernel", default="python3", help="Jupyter kernel name")
        p.add_argument("--vendor", default=str(DEFAULT_VENDOR),
                       help="offline scripts for the pages (see `make vendor`)")

    common(sub.add_parser("run", help="execute the notebooks (make demo)"), "build/notebooks")
    p = sub.add_parser("edition", help="student or instructor edition")
    p.add_argument("name", choices=("student", "instructor"))
    common(p, "build/EDITION")
    p.add_argument("--executed", default="build/notebooks",
                   help="reuse these executed notebooks when up to date (instructor)")
    p.add_argument("--execute", action="store_true", help="execute the student edition too")
    p.add_argument("--force", action="store_true",
                   help="replace student notebooks that were edited since they were written")
    p.add_argument("--html", action="store_true", help="also write HTML pages")
    p = sub.add_parser("slides", help="reveal.js decks for each timeline")
    common(p, "build/slides")
    p.add_argument("--executed", default="build/notebooks", help="as for `edition`")
    p = sub.add_parser("vendor", help="unpack the pages' offline scripts")
    p.add_argument("--wheels", default="build/wheels", help="folder of downloaded wheels")
    p.add_argument("--out", default=str(DEFAULT_VENDOR))
    p = sub.add_parser("pages", help="open pages in headless Chromium")
    p.add_argument("pages", nargs="+")
    p.add_argument("--screenshots", default="build/screenshots")
    p = sub.add_parser("site-src", help="stage the documentation site's source")
    p.add_argument("--executed", default="build/notebooks")
    p.add_argument("--slides", default="build/slides")
    p.add_argument("--out", default="build/site-src")
    p.add_argument("--vendor", default=str(DEFAULT_VENDOR))
    args = parser.parse_args(argv)
    if args.command == "edition" and args.out == "build/EDITION":
        args.out = f"build/{args.name}"
    handler = {"run": _cmd_run, "edition": _cmd_edition, "slides": _cmd_slides,
               "vendor": _cmd_vendor, "pages": _cmd_pages, "site-src": _cmd_site_src}
    return handler[args.command](args)
