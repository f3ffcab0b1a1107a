"""The labelled diagnosis zoo on the current backend: a table of case, expected verdict, verdict,
time, and the confusion counts (expected x got).

    KERAS_BACKEND=jax PYTHONPATH=src python benchmarks/diagnosis_zoo.py            # every case
    KERAS_BACKEND=torch PYTHONPATH=src python benchmarks/diagnosis_zoo.py --fast   # no keras.applications

The cases (models, batches, expected verdicts and their sources) live in
``tests/zoo_cases.py``, shared with ``tests/test_zoo.py``. Exit status 1 when any verdict is
wrong, so the script can gate a run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gradhealth as gh  # first: it quiets TensorFlow before keras imports it

# isort: split
import keras
import pandas as pd

from gradhealth.core.diagnosis import STATUSES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from zoo_cases import CASES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="skip the keras.applications cases")
    parser.add_argument("--case", action="append", help="run only these cases (repeatable)")
    args = parser.parse_args()
    rows = []
    for case in CASES:
        if (args.fast and case.slow) or (args.case and case.name not in args.case):
            continue
        model, x, y, loss = case.build()
        start = time.perf_counter()
        report = gh.checkup(model, x, y, loss=loss)
        elapsed = time.perf_counter() - start
        rows.append({"case": case.name, "expected": case.expected, "verdict": report.status,
                     "ok": "yes" if report.status == case.expected else "NO",
                     "score": report.score, "time_s": round(elapsed, 2),
                     "recommendations": len(report.recommendations)})
        print(f"{case.name:<24} expected {case.expected:<9} got {report.status:<9} "
              f"{elapsed:6.2f} s", flush=True)
    table = pd.DataFrame(rows)
    print(f"\nbackend: {keras.backend.backend()}  (time: the checkup call, model built beforehand; "
          "the first call on a model includes tracing)\n")
    print(table.to_string(index=False))
    statuses = list(STATUSES)
    confusion = pd.crosstab(pd.Categorical(table["expected"], statuses),
                            pd.Categorical(table["verdict"], statuses),
                            rownames=["expected"], colnames=["verdict"], dropna=False)
    print("\nconfusion counts (rows: expected, columns: verdict)\n")
    print(confusion.to_string())
    healthy = table[table["expected"] == "healthy"]
    false_alarms = int((healthy["verdict"] != "healthy").sum())
    wrong = int((table["verdict"] != table["expected"]).sum())
    print(f"\n{len(table) - wrong}/{len(table)} verdicts right; false alarms on healthy cases: "
          f"{false_alarms}/{len(healthy)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
