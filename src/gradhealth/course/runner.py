"""Run the course notebooks headlessly: used by the tests, ``make demo`` and the benchmarks.

Notebooks record the numbers they claim with :func:`summary`; :func:`run_notebook` returns them,
so a test can check that two runs give the same numbers.

Figures: a kernel started here always draws with the inline backend
(:data:`INLINE_BACKEND`), whatever ``MPLBACKEND`` the calling shell exports, so every
``plt.show()`` and every figure left at the end of a cell becomes an image output of the
executed notebook (and of its HTML page, slides and site page).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from gradhealth._internal.io import atomic_write_text
from gradhealth.course.render import write_html

__all__ = [
    "INLINE_BACKEND",
    "KERNEL_NAME",
    "NOTEBOOKS",
    "SUMMARY_MARKER",
    "execute",
    "kernel_env",
    "run_notebook",
    "summaries",
    "summary",
]

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
#: matplotlib backend of every kernel started here. ipykernel selects it by itself only when
#: ``MPLBACKEND`` is unset; a batch shell often exports ``MPLBACKEND=Agg`` (no display), which
#: a kernel would inherit and then keep every figure to itself.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def summary(values: dict[str, Any]) -> dict[str, Any]:
    """Print a notebook's key numbers in a form :func:`run_notebook` can read back.

    Args:
        values: JSON-serializable numbers and strings that the notebook's prose claims.
            Round floats to the precision the prose uses so the record is stable.

    Returns:
        ``values`` unchanged.

    Example:
        >>> summary({"decay_decades": 18})  # doctest: +SKIP
        GRADHEALTH_SUMMARY {"decay_decades": 18}
    """
    print(SUMMARY_MARKER + json.dumps(values, sort_keys=True, default=float))
    return values


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a kernel started to execute a notebook.

    Args:
        base: Environment to start from (default: this process's ``os.environ``).

    Returns:
        A copy of ``base`` with ``MPLBACKEND`` set to :data:`INLINE_BACKEND`.
    """
    env = dict(os.environ if base is None else base)
    env["MPLBACKEND"] = INLINE_BACKEND
    return env


def execute(nb: Any, cwd: str | Path, timeout: int = 300, kernel_name: str = "python3") -> float:
    """Execute a notebook in place in a fresh kernel whose figures render inline.

    Args:
        nb: An ``nbformat`` notebook node; its cells receive their outputs.
        cwd: Working folder of the kernel (the notebook's own folder, so relative paths work).
        timeout: Per-cell timeout in seconds.
        kernel_name: Jupyter kernel to run; ``python3`` is the interpreter running this code.

    Returns:
        The wall time of the run in seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: A cell failed (the error names the cell).
    """
    from nbclient import NotebookClient  # lazy: the notebook extra is needed only to run notebooks

    # The kernel logs a warning that its local loopback TCP channel is unencrypted on every
    # start; only its errors are worth showing in a batch run. Once the last cell has replied
    # there is nothing left to save, so the kernel is stopped at once: a graceful shutdown
    # waited for the interpreter to tear TensorFlow down, 3.3-3.5 s per notebook (measured).
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(cwd)}},
                            shutdown_kernel="immediate")
    start = time.perf_counter()
    client.execute(env=kernel_env())
    return time.perf_counter() - start


def run_notebook(path: str | Path, out_dir: str | Path | None = None, timeout: int = 300,
                 kernel_name: str = "python3", html: bool = False) -> tuple[dict[str, Any], float]:
    """Execute a notebook in a fresh kernel.

    Args:
        path: The ``.ipynb`` file.
        out_dir: Where to write the executed ``.ipynb`` (and ``.html`` when ``html``); nothing
            is written when None.
        timeout: Per-cell timeout in seconds.
        kernel_name: Jupyter kernel to run; ``python3`` is the interpreter running this code.
        html: Also export an HTML page of the executed notebook (scripts from the vendored
            copies in ``build/vendor`` when ``make vendor`` put them there, else from a CDN).

    Returns:
        The merged :func:`summary` records of the run and the wall time in seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: A cell failed (the error names the cell).
    """
    import nbformat  # lazy: the notebook extra is needed only to run notebooks

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    seconds = execute(nb, path.parent, timeout=timeout, kernel_name=kernel_name)
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / path.name, nbformat.writes(nb))
        if html:
            write_html(nb, out / path.with_suffix(".html").name)
    return summaries(nb), seconds


def summaries(nb: Any) -> dict[str, Any]:
    """The merged :func:`summary` records printed by an executed notebook.

    Args:
        nb: An executed notebook (``nbformat`` node or the parsed JSON dict).

    Returns:
        Every recorded key and value; a later record of the same key wins.
    """
    found: dict[str, Any] = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            if isinstance(text, list):
                text = "".join(text)
            for line in text.splitlines():
                if line.startswith(SUMMARY_MARKER):
                    found.update(json.loads(line[len(SUMMARY_MARKER):]))
    return found
