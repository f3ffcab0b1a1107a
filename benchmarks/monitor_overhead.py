"""Cost of GradientHealthMonitor in model.fit, measured side by side in one process.

Models (``--model``):

* ``mlp``: a 20-layer MLP, width 256, batch 256 (the issue's CPU and GPU model);
* ``transformer``: the 6-block transformer of ``../shared/gpu/gpu_bench.py`` (embedding,
  multi-head attention, GELU MLP, layer norms), by default scaled down for a CPU
  (d=128, sequence 64, batch 16; ``--full`` gives the GPU size d=512, sequence 128, batch 32).

Fits the same model with no monitor, with the monitor at ``every=1`` and at ``every=100``
(``--warn-variants``: also ``on_nonfinite="warn"``, which drops the conditional update), one
model per configuration, alternating the configurations over several repeats, on whatever
device Keras sees. Prints, for each monitored configuration, the median over repeats of its
per-step time divided by the unmonitored one's in the same repeat (goals: <= 1.05 at
``every=1``, <= 1.01 at ``every=100``), the ratio of the medians next to it, and a one-line
summary of the paired medians. Pairing within a repeat keeps a drift between repeats on a
shared machine (its load, the CPU's clock) out of the ratio. On the 2-core CI machine either
figure of the same code still moves by about 0.02 from run to run with ``--steps 40 --repeats
16``, and by 0.05-0.10 with 3-5 repeats.

Per-step time is measured from the start of step ``WARMUP_STEPS`` to the end of ``fit`` (a
timing callback), so the one-off tracing/compilation of the train function -- which the
monitor triggers once per ``fit``, when it installs its optimizer wrapper -- is reported
separately rather than mixed into the steady-state figure. The timer has no batch-end hook and
is ``async_safe``: a callback with a batch-end hook that is not makes Keras convert every
step's logs in the training loop, so each step waits for the device (on an H200 that alone
made the monitored JAX transformer 1.76x instead of 1.12x a fit without callbacks), and the
baseline must not pay that either.

``--floor`` also times the monitor's device work alone, outside ``fit``: its per-step
non-finite guard and its logged step's statistics, compiled as ``fit`` compiles them (a
``tf.function``, ``jax.jit``, torch eagerly under ``no_grad``), on gradients of the model's
variable shapes, with warm caches, less the cost of calling a compiled function that does
nothing with the same tensors. On torch, whose train step runs eagerly, ``fit`` makes the same
calls (with colder caches), so ``1 + guard / step`` bounds what ``every=100`` can reach on
this device and ``1 + statistics / step`` what ``every=1`` can. On TensorFlow and JAX the
work is compiled apart from the step, and inside the step the compiler may schedule it
differently: there the figures show its size, not a bound.

Run (on a shared machine, under the benchmark lock)::

    flock /tmp/gradhealth-bench.lock env KERAS_BACKEND=jax \\
        python benchmarks/monitor_overhead.py --model mlp --steps 120 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import gradhealth  # noqa: F401  (first: it quiets TensorFlow before keras imports it)

# isort: split
import keras
import numpy as np

from gradhealth.adapters.fused import stats_kernels
from gradhealth.callbacks.monitor import GradientHealthMonitor
from gradhealth.core.stats import CORE_STATS
from gradhealth.models import deep_mlp
from gradhealth.ops import stats as ops_stats

MLP = {"depth": 20, "width": 256, "batch": 256, "input_dim": 256, "classes": 10}
TRANSFORMER_CPU = {"blocks": 6, "d": 128, "seq": 64, "vocab": 2000, "batch": 16, "classes": 10}
TRANSFORMER_GPU = {"blocks": 6, "d": 512, "seq": 128, "vocab": 8000, "batch": 32, "classes": 10}
WARMUP_STEPS = 5


class StepTimer(keras.callbacks.Callback):
    """Wall time from the start of step WARMUP_STEPS to the end of ``fit`` (when the device
    has finished: the epoch's logs are read), with no hook that makes a step wait."""

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()
        self.mark = math.nan

    def on_train_batch_begin(self, batch, logs=None):
        if batch == WARMUP_STEPS:
            self.mark = time.perf_counter()
        self.steps = batch + 1

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()

    def per_step(self) -> float:
        return (self.end - self.mark) / (self.steps - WARMUP_STEPS)

    def first_steps(self) -> float:
        return self.mark - self.begin


def transformer(blocks: int, d: int, seq: int, vocab: int, classes: int, **_: int) -> keras.Model:
    """The 6-block transformer of ../shared/gpu/gpu_bench.py (post-norm blocks, 8 heads)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((seq,), dtype="int32")
    x = keras.layers.Embedding(vocab, d)(inp)
    for _ in range(blocks):
        a = keras.layers.MultiHeadAttention(8, d // 8)(x, x)
        x = keras.layers.LayerNormalization()(x + a)
        f = keras.layers.Dense(4 * d, activation="gelu")(x)
        f = keras.layers.Dense(d)(f)
        x = keras.layers.LayerNormalization()(x + f)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(classes)(x))


def build(kind: str, full: bool) -> tuple[keras.Model, np.ndarray, np.ndarray, int, str]:
    rng = np.random.default_rng(0)
    if kind == "mlp":
        c = MLP
        model = deep_mlp(c["depth"], width=c["width"], input_dim=c["input_dim"],
                         num_classes=c["classes"], seed=0)
        make_x = lambda n: rng.normal(size=(n, c["input_dim"])).astype("float32")  # noqa: E731
        label = f"mlp {c['depth']}x{c['width']} batch {c['batch']}"
    else:
        c = TRANSFORMER_GPU if full else TRANSFORMER_CPU
        model = transformer(**c)
        make_x = lambda n: rng.integers(0, c["vocab"], size=(n, c["seq"])).astype("int32")  # noqa: E731
        label = f"transformer {c['blocks']} blocks d={c['d']} seq {c['seq']} batch {c['batch']}"
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, make_x, c["classes"], c["batch"], label


def device_name() -> str:
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax  # lazy: only the JAX backend has it loaded

            return str(jax.devices()[0])
        if backend == "torch":
            import torch  # lazy: only the torch backend has it loaded

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf  # lazy: only the TensorFlow backend has it loaded

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    except Exception:  # noqa: BLE001 - a label only
        return "unknown"


def _compiled(fn):
    """``fn`` compiled as ``fit`` compiles the train step, returning a function that runs it
    and waits for its result."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # lazy: only the TensorFlow backend has it loaded

        traced = tf.function(fn)
        return lambda *args: keras.ops.convert_to_numpy(traced(*args))
    if backend == "jax":
        import jax  # lazy: only the JAX backend has it loaded

        jitted = jax.jit(fn)
        return lambda *args: jax.block_until_ready(jitted(*args))
    import torch  # lazy: only the torch backend has it loaded

    def eager(*args):
        with torch.no_grad():
            out = fn(*args)
        return bool(out) if isinstance(out, bool) else keras.ops.convert_to_numpy(out)

    return eager


def _median_call(fn, args: tuple, calls: int) -> float:
    for _ in range(5):  # trace/compile, then warm up
        fn(*args)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_floor(model: keras.Model, calls: int = 100) -> dict[str, float]:
    """Seconds per call of the monitor's device work alone (medians of ``calls``, warm):
    ``guard``, the non-finite check of every step, and ``statistics``, a logged step's
    :data:`~gradhealth.core.stats.CORE_STATS` with the backend's kernels, on normal random
    gradients of the shapes of ``model``'s trainable variables and on its weights. Each less
    the time of a compiled function that takes the same tensors and does nothing: calling a
    ``tf.function`` or a jitted function from Python costs 0.1-1 ms that a train step does not
    pay for the work inside it."""
    rng = np.random.default_rng(0)
    variables = model.trainable_variables
    grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32"))
             for v in variables]
    weights = [keras.ops.convert_to_tensor(v.value) for v in variables]
    kernels = stats_kernels(ops_stats)
    guard = _compiled(lambda g, w: kernels.finite_guard(g))
    stats = _compiled(lambda g, w: ops_stats.device_stats(g, w, kernels=kernels,
                                                           stats=CORE_STATS))
    nothing = _compiled(lambda g, w: keras.ops.zeros(()))
    idle = _median_call(nothing, (grads, weights), calls)
    return {"guard": max(_median_call(guard, (grads, weights), calls) - idle, 0.0),
            "statistics": max(_median_call(stats, (grads, weights), calls) - idle, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "transformer"), default="mlp")
    parser.add_argument("--full", action="store_true",
                        help="transformer: the GPU size (d=512, seq 128, batch 32)")
    parser.add_argument("--steps", type=int, default=120, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    parser.add_argument("--warn-variants", action="store_true",
                        help="also time on_nonfinite='warn' (no conditional update), to split "
                             "the cost of skipping NaN steps from the cost of the statistics")
    parser.add_argument("--floor", action="store_true",
                        help="also time the monitor's guard and statistics alone, outside fit "
                             "(on torch: the least a monitored step can cost on this device)")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed {WARMUP_STEPS + 1}")

    configs: dict[str, tuple[int, str] | None] = {
        "none": None, "every=1": (1, "skip"), "every=100": (100, "skip")}
    if args.warn_variants:
        configs.update({"every=1,warn": (1, "warn"), "every=100,warn": (100, "warn")})
    models = {}
    for name in configs:
        model, make_x, classes, batch, label = build(args.model, args.full)
        models[name] = model
    n = batch * args.steps
    x = make_x(n)
    y = np.random.default_rng(1).integers(0, classes, size=n)

    per_step: dict[str, list[float]] = {k: [] for k in configs}
    startup: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(args.repeats + 1):  # repeat 0 warms up caches and is discarded
        order = list(configs) if r % 2 else list(configs)[::-1]  # alternate the order too
        for name in order:
            setting = configs[name]
            timer = StepTimer()
            callbacks = [timer] if setting is None else [
                GradientHealthMonitor(every=setting[0], on_nonfinite=setting[1]), timer]
            models[name].fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                             callbacks=callbacks)
            if r:
                per_step[name].append(timer.per_step())
                startup[name].append(timer.first_steps())

    base = statistics.median(per_step["none"])
    device = device_name()
    print(f"backend={keras.backend.backend()} device={device} ({platform.processor() or '?'}) "
          f"model={label} steps={args.steps} repeats={args.repeats} keras={keras.__version__}")
    ratios = {}
    for name in configs:
        med = statistics.median(per_step[name])
        paired = [v / b for v, b in zip(per_step[name], per_step["none"], strict=True)]
        ratios[name] = statistics.median(paired)
        each = " ".join(f"{r:.3f}" for r in paired)
        print(f"{name:>15}: {1e3 * med:8.2f} ms/step  paired ratio {ratios[name]:.3f}  "
              f"ratio of medians {med / base:.3f}  (per repeat: {each}; first {WARMUP_STEPS} "
              f"steps incl. tracing: {statistics.median(startup[name]):.2f} s)")
    if args.floor:
        floor = device_floor(models["none"])
        print("device work alone (warm, outside fit): " + "; ".join(
            f"{name} {1e3 * sec:.3f} ms = {100 * sec / base:.1f}% of a step"
            for name, sec in floor.items()))
        if keras.backend.backend() == "torch":
            # Eager: fit makes these same calls, with colder caches.
            print(f"  torch runs them eagerly, as fit does: every=100 cannot cost less than "
                  f"{1 + floor['guard'] / base:.3f}x here, every=1 less than "
                  f"{1 + floor['statistics'] / base:.3f}x")
        else:
            print("  compiled apart from the train step: not a bound (inside the step the "
                  "compiler may schedule the same work differently)")
    print(f"SUMMARY {keras.backend.backend()} {device} {args.model}: none "
          f"{1e3 * base:.2f} ms/step; " + ", ".join(
              f"{k} {v:.3f}x" for k, v in ratios.items() if k != "none"))


if __name__ == "__main__":
    main()
