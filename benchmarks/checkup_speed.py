"""Time of a warm ``gradhealth.checkup`` divided by a warm ``model.train_on_batch``.

Both run on the same batch in the same process, alternating (so machine noise hits both
alike), after warm-up (tracing/compilation of both paths); the script prints the median of each
over ``--repeats`` alternating rounds, their ratio (goal: <= 1.5), the time of the measuring half
alone (``gradient_stats``: forward, backward and the statistics reduced on the device) and a
one-line summary. It runs on whatever device Keras sees (CPU here, a GPU when present).

A checkup does one forward and one backward pass (like a training step, minus the optimizer
update), reduces the gradients to 8 numbers per variable on the device, then builds the report
tables and the diagnosis from those numbers on the host (no plot is drawn unless asked for).

Usage::

    KERAS_BACKEND=jax .venv/bin/python benchmarks/checkup_speed.py --model mlp [--repeats 7]

Models: ``mlp`` (the 30-layer width-64 ReLU demo network, digits batch 256), ``transformer``
(4 blocks, d=128, 4 heads, sequence 64, batch 32; ``--full``: the GPU transformer of
``monitor_overhead.py --full`` and ``../shared/gpu/gpu_bench.py``, 6 post-norm blocks, d=512,
8 heads, sequence 128, vocabulary 8000, batch 32), ``mobilenet`` (MobileNetV2, 224 px, batch 8,
random weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gradhealth as gh  # first: it quiets TensorFlow before keras imports it

# isort: split
import keras
import numpy as np
from monitor_overhead import TRANSFORMER_GPU, device_name  # the benchmarks folder is on sys.path
from monitor_overhead import transformer as gpu_transformer

MODELS = ("mlp", "transformer", "mobilenet")


def transformer(seq: int = 64, d: int = 128, heads: int = 4, blocks: int = 4,
                vocab: int = 1000, classes: int = 10) -> keras.Model:
    """A small encoder classifier: embedding, pre-norm attention/MLP blocks, pooled head."""
    tokens = keras.Input((seq,), dtype="int32")
    h = keras.layers.Embedding(vocab, d)(tokens)
    for i in range(blocks):
        a = keras.layers.LayerNormalization(name=f"ln_a{i}")(h)
        a = keras.layers.MultiHeadAttention(heads, d // heads, name=f"attn{i}")(a, a)
        h = keras.layers.Add()([h, a])
        m = keras.layers.LayerNormalization(name=f"ln_m{i}")(h)
        m = keras.layers.Dense(4 * d, activation="gelu", name=f"up{i}")(m)
        h = keras.layers.Add()([h, keras.layers.Dense(d, name=f"down{i}")(m)])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(h))
    return keras.Model(tokens, keras.layers.Dense(classes, name="head")(pooled))


def build(name: str, mobilenet_batch: int, full: bool = False
          ) -> tuple[str, keras.Model, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "transformer" and full:
        c = TRANSFORMER_GPU
        x = rng.integers(0, c["vocab"], size=(c["batch"], c["seq"])).astype("int32")
        y = rng.integers(0, c["classes"], size=c["batch"])
        return (f"transformer ({c['blocks']}x d{c['d']}, seq {c['seq']}, batch {c['batch']})",
                gpu_transformer(**c), x, y)
    if name == "mlp":
        x, y = gh.data.digits_batch(256)
        return "30-layer MLP (width 64, batch 256)", gh.models.demo_network("relu"), x, y
    if name == "transformer":
        x = rng.integers(0, 1000, size=(32, 64)).astype("int32")
        y = rng.integers(0, 10, size=32)
        return "transformer (4x d128, seq 64, batch 32)", transformer(), x, y
    n = mobilenet_batch
    x = rng.normal(size=(n, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 10, size=n)
    model = keras.applications.MobileNetV2(weights=None, classes=10, classifier_activation=None)
    return f"MobileNetV2 (batch {n}, 224px)", model, x, y


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(label: str, model: keras.Model, x: np.ndarray, y: np.ndarray,
            repeats: int) -> tuple[float, float, float, float]:
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=gh.models.classification_loss())
    for _ in range(3):  # warm-up: TF checks a model eagerly twice, then compiles
        model.train_on_batch(x, y)
        gh.checkup(model, x, y)
        gh.gradient_stats(model, x, y)
    t_train, t_check, t_stats = [], [], []
    for _ in range(repeats):  # alternate so that machine noise hits all alike
        t_train.append(timed(lambda: model.train_on_batch(x, y)))
        t_check.append(timed(lambda: gh.checkup(model, x, y)))
        t_stats.append(timed(lambda: gh.gradient_stats(model, x, y)))
    train, check, stats = (statistics.median(t) for t in (t_train, t_check, t_stats))
    print(f"{label:<42} train_on_batch {1000 * train:8.1f} ms   checkup {1000 * check:8.1f} ms"
          f" (ratio {check / train:5.2f}, goal <= 1.5)   gradient_stats {1000 * stats:8.1f} ms"
          f" (ratio {stats / train:5.2f})")
    return train, check, stats, check / train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, action="append",
                        help="model(s) to time (repeatable; default: mlp and mobilenet)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="alternating rounds; the medians are reported (>= 3)")
    parser.add_argument("--mobilenet-batch", type=int, default=8)
    parser.add_argument("--full", action="store_true",
                        help="transformer: the GPU size (6 blocks, d=512, seq 128, batch 32)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3. Received: --repeats={args.repeats}")
    device = device_name()
    print(f"backend: {keras.backend.backend()}   devices: {device}   repeats: {args.repeats}")
    summary = []
    for name in args.model or ["mlp", "mobilenet"]:
        label, model, x, y = build(name, args.mobilenet_batch, args.full)
        *_, ratio = compare(label, model, x, y, args.repeats)
        summary.append(f"{name} {ratio:.2f}x")
    print(f"summary [{keras.backend.backend()}]: checkup / train_on_batch = "
          + ", ".join(summary) + " (goal <= 1.5x)")


if __name__ == "__main__":
    main()
