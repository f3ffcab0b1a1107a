"""Cost of GradientHealthMonitor in model.fit: a 20-layer MLP (width 256, batch 256).

Fits the same model with no monitor, with the monitor at ``every=1`` and at ``every=100`` in
one process, alternating the three configurations over several repeats, and prints the ratio of
the median per-step time of each monitored run to the unmonitored one (goals: <= 1.05 at
``every=1``, <= 1.01 at ``every=100``).

Per-step time is measured between the end of step ``WARMUP_STEPS`` and the end of the last step
(a timing callback), so the one-off tracing/compilation of the train function -- which the
monitor triggers once per ``fit``, when it installs its optimizer wrapper -- is reported
separately rather than mixed into the steady-state figure.

Run: ``KERAS_BACKEND=jax python benchmarks/monitor_overhead.py [--steps 120 --repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import gradhealth  # noqa: F401  (first: it quiets TensorFlow before keras imports it)

# isort: split
import keras
import numpy as np

from gradhealth.callbacks.monitor import GradientHealthMonitor
from gradhealth.models import deep_mlp

DEPTH, WIDTH, BATCH, INPUT_DIM, CLASSES = 20, 256, 256, 256, 10
WARMUP_STEPS = 5


class StepTimer(keras.callbacks.Callback):
    """Wall time from the end of step WARMUP_STEPS to the end of the last step, and of fit."""

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()
        self.marks: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append(time.perf_counter())

    def per_step(self) -> float:
        m = self.marks
        return (m[-1] - m[WARMUP_STEPS]) / (len(m) - 1 - WARMUP_STEPS)

    def first_steps(self) -> float:
        return self.marks[WARMUP_STEPS] - self.begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    parser.add_argument("--warn-variants", action="store_true",
                        help="also time on_nonfinite='warn' (no conditional update), to split "
                             "the cost of skipping NaN steps from the cost of the statistics")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * args.steps, INPUT_DIM)).astype("float32")
    y = rng.integers(0, CLASSES, size=BATCH * args.steps)
    configs: dict[str, tuple[int, str] | None] = {
        "none": None, "every=1": (1, "skip"), "every=100": (100, "skip")}
    if args.warn_variants:
        configs.update({"every=1,warn": (1, "warn"), "every=100,warn": (100, "warn")})
    models = {}
    for name in configs:
        model = deep_mlp(DEPTH, width=WIDTH, input_dim=INPUT_DIM, num_classes=CLASSES, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[name] = model

    per_step: dict[str, list[float]] = {k: [] for k in configs}
    startup: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(args.repeats + 1):  # repeat 0 warms up caches and is discarded
        for name, setting in configs.items():
            timer = StepTimer()
            callbacks = [timer] if setting is None else [
                GradientHealthMonitor(every=setting[0], on_nonfinite=setting[1]), timer]
            models[name].fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                             callbacks=callbacks)
            if r:
                per_step[name].append(timer.per_step())
                startup[name].append(timer.first_steps())

    base = statistics.median(per_step["none"])
    print(f"backend={keras.backend.backend()} depth={DEPTH} width={WIDTH} batch={BATCH} "
          f"steps={args.steps} repeats={args.repeats}")
    for name in configs:
        med = statistics.median(per_step[name])
        print(f"{name:>15}: {1e3 * med:7.2f} ms/step  ratio {med / base:.3f}  "
              f"(first {WARMUP_STEPS} steps incl. tracing: {statistics.median(startup[name]):.2f} s)")


if __name__ == "__main__":
    main()
