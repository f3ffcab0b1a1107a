"""Wall time of the default experiment grid, compiled vs. eager, printed as a ratio.

The grid is 4 activations x 4 initializers x depths (5, 10, 25, 50) x 1 seed of width-64 MLPs
on 128 digits (the issue's "4 x 4 x 4-depth grid"). Both runs happen here, one after the
other, on the same machine and backend:

    KERAS_BACKEND=tensorflow python benchmarks/grid_speed.py

After a warm-up grid of depth 2 (every activation and initializer), the compiled run includes tracing/compilation of every (activation,
depth) group (what a user pays); the eager run is the same measurement without ``tf.function``/``jax.jit`` (torch always runs eagerly, so its ratio
is about 1).
"""

from __future__ import annotations

import time

import gradhealth  # noqa: F401  (first: it quiets TensorFlow before keras imports it)

# isort: split
import keras

from gradhealth.course.experiments import grid


def main() -> None:
    # Warm-up outside the timings: first calls pay one-off costs (backend kernels, RNG set-up)
    # that are not the grid's.
    for compiled in (True, False):
        grid(depths=[2], progress=False, compiled=compiled)
    start = time.perf_counter()
    compiled = grid(progress=False)
    t_compiled = time.perf_counter() - start
    start = time.perf_counter()
    eager = grid(progress=False, compiled=False)
    t_eager = time.perf_counter() - start
    assert len(compiled) == len(eager)
    print(f"backend: {keras.backend.backend()}")
    print(f"configurations: {len(compiled[['activation', 'initializer', 'depth']].drop_duplicates())}"
          f", rows: {len(compiled)}")
    print(f"compiled grid (incl. compilation): {t_compiled:.1f} s")
    print(f"eager grid:                        {t_eager:.1f} s")
    print(f"eager / compiled:                  {t_eager / t_compiled:.2f}x")


if __name__ == "__main__":
    main()
