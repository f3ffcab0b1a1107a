"""Time of a warm ``gradhealth.diagnosis`` divided by a warm ``model.train_on_batch``.

Both run on the same batch in the same process, alternating, after warm-up; the script prints
the median of each and their ratio (goal: <= 1.5). A checkup does one forward and one backward
pass (like a training step, minus the optimizer update) plus float64 statistics on the host.

Usage: ``KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/checkup_speed.py [--repeats 7]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import gradhealth as gh  # first: it quiets TensorFlow before keras imports it

# isort: split
import keras
import numpy as np


def median_time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def compare(name: str, model: keras.Model, x: np.ndarray, y: np.ndarray, repeats: int) -> float:
    loss = gh.models.classification_loss()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
    for _ in range(2):  # warm-up: tracing/compilation of both paths
        model.train_on_batch(x, y)
        gh.checkup(model, x, y)
    t_train, t_check = [], []
    for _ in range(repeats):  # alternate so that machine noise hits both alike
        t_train += median_time(lambda: model.train_on_batch(x, y), 1)
        t_check += median_time(lambda: gh.checkup(model, x, y), 1)
    a, b = statistics.median(t_check), statistics.median(t_train)
    print(f"{name:<28} checkup {1000 * a:8.1f} ms   train_on_batch {1000 * b:8.1f} ms   "
          f"ratio {a / b:5.2f}  (goal <= 1.5)")
    return a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mobilenet-batch", type=int, default=8)
    args = parser.parse_args()
    print(f"backend: {keras.backend.backend()}")
    x, y = gh.data.digits_batch(256)
    compare("30-layer MLP (width 64)", gh.models.demo_network("relu"), x, y, args.repeats)
    rng = np.random.default_rng(0)
    n = args.mobilenet_batch
    xi = rng.normal(size=(n, 224, 224, 3)).astype("float32")
    yi = rng.integers(0, 10, size=n)
    mobilenet = keras.applications.MobileNetV2(weights=None, classes=10,
                                               classifier_activation=None)
    compare(f"MobileNetV2 (batch {n}, 224px)", mobilenet, xi, yi, max(3, args.repeats // 2))


if __name__ == "__main__":
    main()
