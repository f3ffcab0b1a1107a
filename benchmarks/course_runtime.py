"""Time the six course notebooks, each in a fresh kernel, and print each time and the total.

Goal (issue 5): the whole course in at most 120 s on the 2-core CI machine. Notebooks that do not
exist yet are listed as missing; a notebook that fails is reported with its error and makes the
script exit with status 1.

Usage:
    python benchmarks/course_runtime.py [--kernel python3] [--out build/notebooks] [--html]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from gradhealth.course import NOTEBOOKS, run_notebook

GOAL_SECONDS: float = 120.0
"""The course-wide budget of issue 5 (the seed allows 5-10 minutes per notebook)."""

PER_NOTEBOOK_SECONDS: float = 30.0
"""Each notebook's budget on CI."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", default=str(Path(__file__).resolve().parents[1] / "notebooks"),
                        help="folder holding the .ipynb files")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--out", default=None, help="write executed notebooks here")
    parser.add_argument("--html", action="store_true", help="also export HTML (needs --out)")
    args = parser.parse_args(argv)

    folder = Path(args.notebooks)
    total, failed = 0.0, 0
    print(f"{'notebook':45s} {'seconds':>8s}  status")
    wall = time.perf_counter()
    for name in NOTEBOOKS:
        path = folder / name
        if not path.exists():
            print(f"{name:45s} {'-':>8s}  missing")
            continue
        try:
            _, seconds = run_notebook(path, out_dir=args.out, kernel_name=args.kernel,
                                      html=args.html)
        except Exception as e:  # report every notebook, then fail at the end
            failed += 1
            last = _ANSI.sub("", str(e)).strip().splitlines()[-1][:120]
            print(f"{name:45s} {'-':>8s}  FAILED: {type(e).__name__}: {last}")
            continue
        total += seconds
        flag = "ok" if seconds <= PER_NOTEBOOK_SECONDS else f"over {PER_NOTEBOOK_SECONDS:g} s"
        print(f"{name:45s} {seconds:8.1f}  {flag}")
    print(f"{'total (cell execution)':45s} {total:8.1f}  goal <= {GOAL_SECONDS:g} s: "
          f"{'met' if total <= GOAL_SECONDS else 'NOT met'}")
    print(f"{'wall time incl. kernel start-up':45s} {time.perf_counter() - wall:8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
