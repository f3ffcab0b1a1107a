"""Run the course notebooks headlessly: used by the tests, ``make demo`` and the benchmarks.

Notebooks record the numbers they claim with :func:`summary`; :func:`run_notebook` returns them,
so a test can check that two runs give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from gradhealth._internal.io import atomic_write_text

__all__ = ["KERNEL_NAME", "NOTEBOOKS", "SUMMARY_MARKER", "main", "run_notebook", "summary"]

SUMMARY_MARKER = "GRADHEALTH_SUMMARY "
NOTEBOOKS: tuple[str, ...] = (
    "1_vanishing_gradients_demonstration.ipynb",
    "2_gradient_health_monitoring.ipynb",
    "3_gradient_explosion_detection.ipynb",
    "4_activation_functions_analysis.ipynb",
    "5_weight_initialization_strategies.ipynb",
    "6_gradient_solutions_summary.ipynb",
)
KERNEL_NAME = "week5-gradients"


def summary(values: dict[str, Any]) -> dict[str, Any]:
    """Print a notebook's key numbers in a form :func:`run_notebook` can read back.

    Args:
        values: JSON-serializable numbers and strings that the notebook's prose claims.
            Round floats to the precision the prose uses so the record is stable.

    Returns:
        ``values`` unchanged.
    """
    print(SUMMARY_MARKER + json.dumps(values, sort_keys=True, default=float))
    return values


def run_notebook(path: str | Path, out_dir: str | Path | None = None, timeout: int = 300,
                 kernel_name: str = "python3", html: bool = False) -> tuple[dict[str, Any], float]:
    """Execute a notebook in a fresh kernel.

    Args:
        path: The ``.ipynb`` file.
        out_dir: Where to write the executed ``.ipynb`` (and ``.html`` when ``html``); nothing
            is written when None.
        timeout: Per-cell timeout in seconds.
        kernel_name: Jupyter kernel to run; ``python3`` is the interpreter running this code.
        html: Also export an HTML page of the executed notebook.

    Returns:
        The merged :func:`summary` records of the run and the wall time in seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: A cell failed (the error names the cell).
    """
    import nbformat  # lazy: the notebook extra is needed only to run notebooks
    from nbclient import NotebookClient  # lazy: as nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # The kernel logs a warning that its local loopback TCP channel is unencrypted on every
    # start; only its errors are worth showing in a batch run.
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / path.name, nbformat.writes(nb))
        if html:
            from nbconvert import HTMLExporter  # lazy: as nbformat above

            body, _ = HTMLExporter().from_notebook_node(nb)
            atomic_write_text(out / path.with_suffix(".html").name, body)
    return _summaries(nb), seconds


def _summaries(nb: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(SUMMARY_MARKER):
                    found.update(json.loads(line[len(SUMMARY_MARKER):]))
    return found


def main(argv: list[str] | None = None) -> int:
    """Execute the course notebooks into a folder (``python -m gradhealth.course``).

    Writes each executed ``.ipynb`` and its ``.html`` to ``--out`` (default
    ``build/notebooks``) and prints one line per notebook with its run time.
    Returns 0 when every notebook ran, 1 otherwise.
    """
    parser = argparse.ArgumentParser(prog="python -m gradhealth.course", description=main.__doc__)
    parser.add_argument("--notebooks", default="notebooks", help="folder with the .ipynb files")
    parser.add_argument("--out", default="build/notebooks", help="output folder")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = parser.parse_args(argv)
    folder = Path(args.notebooks)
    paths = [folder / name for name in NOTEBOOKS if (folder / name).exists()]
    if not paths:
        print(f"no course notebooks found in {folder}")
        return 1
    failed = 0
    total = 0.0
    for path in paths:
        try:
            _, seconds = run_notebook(path, out_dir=args.out, kernel_name=args.kernel, html=True)
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            failed += 1
            print(f"FAILED {path.name}: {type(e).__name__}: {str(e).splitlines()[-1][:200]}")
            continue
        total += seconds
        print(f"ok     {path.name:<48} {seconds:6.1f} s")
    print(f"{len(paths) - failed}/{len(paths)} notebooks executed in {total:.1f} s -> {args.out}")
    return 1 if failed else 0
