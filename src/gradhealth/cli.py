"""The ``gradhealth`` command: parse, call the library, print, exit code.

Commands:
    ``gradhealth checkup --demo {sigmoid,relu,exploding}``: checkup of a course demo network.
    ``gradhealth checkup MODEL.keras --data DATA.npz [--loss NAME] [--batch N]``: checkup of a
    saved model on the arrays ``x`` and ``y`` of an ``.npz`` file.
    ``gradhealth demo [--out DIR]``: the three demo networks side by side (``make demo``).

Exit codes (:data:`EXIT_OK`, :data:`EXIT_UNHEALTHY`, :data:`EXIT_USAGE`): 0 healthy (``demo``:
every demo network got its expected diagnosis), 1 an unhealthy status was found (``demo``: a
diagnosis differed from the expected one), 2 usage or input error, reported as one line on
stderr without a traceback.

Example:
    $ gradhealth checkup --demo sigmoid --out build/sigmoid
    $ echo $?
    1
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
from rich.console import Console
from rich.text import Text

import gradhealth
from gradhealth._internal.io import atomic_write_text
from gradhealth.data import digits_batch
from gradhealth.diagnosis import HealthReport, checkup
from gradhealth.models import DEMO_NETWORKS, classification_loss, demo_network
from gradhealth.report.plots import STATUS_COLORS, compare_gradient_flow, figure_png
from gradhealth.report.terminal import report_renderable, status_text, summary_table

__all__ = ["DEFAULT_CHECKUP_OUT", "DEFAULT_DEMO_OUT", "DEMO_BATCH_SIZE", "EXIT_OK",
           "EXIT_UNHEALTHY", "EXIT_USAGE", "EXPECTED_DEMO_STATUS", "PIPE_WIDTH", "UsageError",
           "backend_line", "build_parser", "main"]

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2

#: What each demo network must be diagnosed as (issue #2, "Done when"): a 30-layer sigmoid MLP
#: with Glorot init vanishes, a 30-layer ReLU MLP with He init is healthy, a ReLU MLP with
#: ``RandomNormal(stddev=1.0)`` explodes. ``gradhealth demo`` exits 0 only when all three match.
EXPECTED_DEMO_STATUS: dict[str, str] = {
    "sigmoid": "vanishing",
    "relu": "healthy",
    "exploding": "exploding",
}
#: Examples in the digits batch of a demo checkup: the batch size the course notebooks use; large
#: enough that every one of the 10 classes appears, small enough that a checkup takes < 1 s on CPU.
DEMO_BATCH_SIZE = 128
#: Where ``gradhealth demo`` writes its reports (``build/`` is git-ignored).
DEFAULT_DEMO_OUT = "build/reports"
#: Where ``gradhealth checkup`` writes ``report.html`` and ``report.json``.
DEFAULT_CHECKUP_OUT = "."
#: Width of the tables when stdout is not a terminal (logs, ``make demo`` piped to a file); rich
#: would otherwise use 80 columns and wrap the layer names.
PIPE_WIDTH = 120


class UsageError(Exception):
    """A command-line or input-file problem: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def backend_line() -> str:
    """One line naming the active Keras backend and its version, e.g. for bug reports."""
    name = keras.backend.backend()
    module = sys.modules.get(name)
    version = getattr(module, "__version__", "") if module is not None else ""
    return (f"gradhealth {gradhealth.__version__} · Keras {keras.__version__} · backend {name}"
            f"{' ' + version if version else ''} (set KERAS_BACKEND to change it)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradhealth`` command (exposed for docs and tests)."""
    parser = _Parser(prog="gradhealth",
                     description="Gradient health checkups for Keras 3 models.")
    parser.add_argument("--version", action="version",
                        version=f"gradhealth {gradhealth.__version__}")
    parser.add_argument("--backend", action="store_true", dest="backend_info",
                        help="print which Keras backend is active and exit")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only one verdict line per network")
    sub = parser.add_subparsers(dest="command", metavar="{checkup,demo}")

    # The sub-command copy of --quiet must not reset a --quiet given before the command.
    quiet = _Parser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="print only one verdict line per network")

    check = sub.add_parser(
        "checkup", parents=[quiet], help="checkup of one model (a demo network or a saved one)",
        description="Per-layer gradient statistics and a diagnosis for one batch; writes "
                    "report.html and report.json into --out.")
    check.add_argument("model", nargs="?", metavar="MODEL",
                       help="a saved Keras model (.keras); needs --data")
    check.add_argument("--demo", choices=DEMO_NETWORKS, help="use a course demo network")
    check.add_argument("--data", metavar="DATA.npz",
                       help="NumPy archive with arrays `x` (inputs) and `y` (targets)")
    check.add_argument("--loss", metavar="NAME",
                       help="Keras loss name, needed when the saved model is not compiled")
    check.add_argument("--batch", type=_positive_int, metavar="N",
                       help=f"use the first N examples (default: all of DATA; "
                            f"{DEMO_BATCH_SIZE} digits for --demo)")
    check.add_argument("--out", default=DEFAULT_CHECKUP_OUT, metavar="DIR",
                       help="folder for report.html and report.json (default: current folder)")
    check.set_defaults(func=_cmd_checkup)

    demo = sub.add_parser(
        "demo", parents=[quiet], help="the three demo networks side by side",
        description="Checkups of the sigmoid, relu and exploding demo networks; writes each "
                    "report and an index.html into --out.")
    demo.add_argument("--out", default=DEFAULT_DEMO_OUT, metavar="DIR",
                      help=f"folder for the reports (default: {DEFAULT_DEMO_OUT})")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gradhealth`` command.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 healthy, 1 unhealthy (or an unexpected demo diagnosis), 2 usage or
        input error (one line on stderr).

    Example:
        >>> main(["checkup", "--demo", "relu", "--out", "/tmp/relu"])
        0
    """
    parser = build_parser()
    captured = _Captured()
    try:
        with _captured_stderr(captured):
            args = parser.parse_args(argv)
            if args.backend_info:
                print(backend_line())
                return EXIT_OK
            if args.command is None:
                raise UsageError("choose a command, checkup or demo (see gradhealth --help)")
            width = None if sys.stdout.isatty() else PIPE_WIDTH
            console = Console(file=sys.stdout, highlight=False, width=width)
            code = args.func(args, console)
    except SystemExit as e:  # --help and --version (usage errors raise UsageError instead)
        return e.code if isinstance(e.code, int) else EXIT_OK
    except (UsageError, ValueError, TypeError, OSError) as e:
        # The library's ValueError/TypeError name the argument and the value: that sentence is
        # the whole message a user needs, so no traceback, and nothing else on stderr (warnings
        # Keras printed while loading are dropped with the failed attempt).
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"gradhealth: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    # Success: what libraries printed on stderr (e.g. Keras warnings) is passed on unchanged.
    if captured.text:
        sys.stderr.write(captured.text)
    return code


class _Captured:
    """Text written to stderr while a command ran (Python writes, warnings and C-level writes)."""

    text: str = ""


@contextlib.contextmanager
def _captured_stderr(into: _Captured) -> Iterator[None]:
    """Hold back everything written to stderr, at the Python and file-descriptor level.

    Keras and TensorFlow report some problems (an optimizer state that cannot be restored, an
    absl log line) on stderr while a model loads. The CLI promises exactly one line on an input
    error, so those lines are captured here and only passed on when the command succeeds.
    """
    buffer = io.StringIO()
    sys.stderr.flush()
    try:
        saved_fd = os.dup(2)
    except OSError:  # no file descriptor 2 (embedded interpreters): Python-level capture only
        saved_fd = None
    with tempfile.TemporaryFile(mode="w+b") as low:
        if saved_fd is not None:
            os.dup2(low.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stderr(buffer):
                warnings.simplefilter("always")
                yield
        finally:
            sys.stderr.flush()
            if saved_fd is not None:
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
            low.seek(0)
            lines = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                     for w in caught]
            into.text = (low.read().decode("utf-8", "replace") + buffer.getvalue()
                         + "".join(lines))


def _load_npz(path: str, batch: int | None) -> tuple[np.ndarray, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data file not found: {path}")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"could not read {path} as a NumPy .npz archive "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"{path} is a single .npy array; save the data with "
                         "numpy.savez(path, x=inputs, y=targets)")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise UsageError(
                f"{path} has no array {' or '.join(repr(k) for k in missing)} (found: "
                f"{', '.join(archive.files) or 'nothing'}); save the data with "
                "numpy.savez(path, x=inputs, y=targets)")
        try:
            x, y = archive["x"], archive["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise UsageError(f"could not read the arrays x and y of {path} "
                             f"({type(e).__name__}: {e})") from e
    if batch is not None:
        if batch > len(x):
            raise UsageError(f"--batch {batch} asks for more examples than {path} holds "
                             f"({len(x)})")
        x, y = x[:batch], y[:batch]
    return x, y


def _check_keras_file(file: Path, path: str) -> None:
    """Raise a one-line :class:`UsageError` unless ``file`` looks like a whole ``.keras`` archive.

    Keras itself reports a ``.keras`` file that is not a zip archive as "File not found", which
    sends the user looking for the wrong problem.
    """
    invalid = f"{path} is not a valid Keras model file"
    if not zipfile.is_zipfile(file):
        raise UsageError(f"{invalid}: not a zip archive (corrupt or truncated?)")
    try:
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UsageError(f"{invalid}: {type(e).__name__}: {e}") from e
    if "config.json" not in names:
        raise UsageError(f"{invalid}: the archive has no config.json "
                         f"(found: {', '.join(sorted(names)[:5]) or 'nothing'})")
    if broken is not None:
        raise UsageError(f"{invalid}: member {broken} is corrupt (truncated file?)")


def _load_model(path: str) -> keras.Model:
    file = Path(path)
    if not file.exists():
        raise UsageError(f"model file not found: {path}")
    if not file.is_file():
        raise UsageError(f"model path {path} is a folder, not a .keras file")
    if file.suffix.lower() == ".keras":
        _check_keras_file(file, path)
    try:
        model = keras.saving.load_model(file)
    # A user's file can fail to load in many ways (unknown custom layer, h5py missing, version
    # skew); each is one line for the user, so the boundary catches them all.
    except Exception as e:  # noqa: BLE001
        first = (str(e).splitlines() or [""])[0][:300]
        raise UsageError(f"could not load model {path} ({type(e).__name__}: {first})") from e
    if not isinstance(model, keras.Model):
        raise UsageError(f"{path} holds a {type(model).__name__}, not a keras.Model")
    return model


def _save(report: HealthReport, out: str, stem: str) -> list[Path]:
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    return [Path(report.save(str(folder / f"{stem}{ext}"))) for ext in (".html", ".json")]


def _verdict(report: HealthReport, label: str, paths: list[Path]) -> Text:
    return Text.assemble(f"{label}: ", status_text(report.status),
                         f" (score {report.score:g}/100) -> {', '.join(map(str, paths))}")


def _cmd_checkup(args: argparse.Namespace, console: Console) -> int:
    if (args.model is None) == (args.demo is None):
        raise UsageError("checkup needs either MODEL (with --data) or --demo NAME, not both")
    if args.demo is not None:
        if args.data is not None or args.loss is not None:
            raise UsageError("--data and --loss go with a saved MODEL, not with --demo")
        x, y = digits_batch(args.batch or DEMO_BATCH_SIZE)
        model, loss, label = demo_network(args.demo), classification_loss(), args.demo
    else:
        if args.data is None:
            raise UsageError("a saved MODEL needs --data DATA.npz (arrays x and y)")
        x, y = _load_npz(args.data, args.batch)
        model, loss, label = _load_model(args.model), args.loss, args.model
        if loss is None and not (model.compiled and getattr(model, "loss", None) is not None):
            raise UsageError(f"the model in {args.model} is not compiled with a loss: pass "
                             "--loss NAME, e.g. --loss sparse_categorical_crossentropy")
    if not args.quiet:
        console.print(Text(backend_line(), style="dim"), soft_wrap=True)
    report = checkup(model, x, y, loss=loss)
    paths = _save(report, args.out, "report")
    if not args.quiet:
        console.print(report_renderable(report))
    console.print(_verdict(report, label, paths), soft_wrap=True)
    return EXIT_OK if report.healthy else EXIT_UNHEALTHY


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    if not args.quiet:
        console.print(Text(backend_line(), style="dim"), soft_wrap=True)
    x, y = digits_batch(DEMO_BATCH_SIZE)
    loss = classification_loss()
    reports: dict[str, HealthReport] = {}
    for kind in DEMO_NETWORKS:
        reports[kind] = report = checkup(demo_network(kind), x, y, loss=loss)
        paths = _save(report, args.out, kind)
        if args.quiet:
            console.print(_verdict(report, kind, paths), soft_wrap=True)
    index = Path(args.out) / "index.html"
    atomic_write_text(index, _index_html(reports))
    mismatched = [k for k, r in reports.items() if r.status != EXPECTED_DEMO_STATUS.get(k)]
    if not args.quiet:
        console.print(summary_table(reports, EXPECTED_DEMO_STATUS))
        console.print(f"Reports: {index} (and <network>.html / <network>.json beside it)")
    for kind in mismatched:
        console.print(Text(f"{kind}: diagnosed {reports[kind].status}, expected "
                           f"{EXPECTED_DEMO_STATUS.get(kind)}", style="bold red"))
    return EXIT_UNHEALTHY if mismatched else EXIT_OK


def _index_html(reports: dict[str, HealthReport]) -> str:
    """The demo's combined page: summary table linking each report, and the compared flows."""

    rows = []
    for kind, rep in reports.items():
        norms = rep.layers["grad_norm"]
        color = STATUS_COLORS.get(rep.status, "#555")
        finding = rep.findings[0] if rep.findings else "no problem found"
        rows.append(
            f"<tr><td><a href='{kind}.html'>{html.escape(kind)}</a> "
            f"(<a href='{kind}.json'>json</a>)</td>"
            f"<td style='color:{color};font-weight:600'>{html.escape(rep.status)}</td>"
            f"<td>{rep.score:g}</td><td>{float(norms.iloc[0]):.3g}</td>"
            f"<td>{float(norms.iloc[-1]):.3g}</td>"
            f"<td>{html.escape(EXPECTED_DEMO_STATUS.get(kind, '?'))}</td>"
            f"<td style='text-align:left'>{html.escape(finding)}</td></tr>")
    png = base64.b64encode(figure_png(compare_gradient_flow(reports))).decode("ascii")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>gradhealth demo</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:"
        "collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}</style></head>"
        f"<body><h1>gradhealth demo: three networks, one digits batch</h1>"
        f"<p>{html.escape(backend_line())}</p><table><tr><th>network</th><th>status</th>"
        "<th>score</th><th>first layer |g|</th><th>last layer |g|</th><th>expected</th>"
        f"<th>key finding</th></tr>{''.join(rows)}</table>"
        f"<p><img alt='gradient flow compared' src='data:image/png;base64,{png}'/></p>"
        "</body></html>"
    )


if __name__ == "__main__":  # pragma: no cover - `python -m gradhealth.cli`
    sys.exit(main())
