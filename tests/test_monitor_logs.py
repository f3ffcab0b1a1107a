"""The monitor's logs survive a crash: CSV after ``kill -9``, TensorBoard read with tbparse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from gradhealth.callbacks.monitor import HISTORY_COLUMNS, GradientHealthMonitor

ROOT = Path(__file__).resolve().parents[1]

TRAIN = textwrap.dedent("""
    import sys, numpy as np, keras
    import gradhealth as gh
    csv, marker = sys.argv[1], sys.argv[2]

    class Mark(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 40:
                open(marker, "w").close()  # the parent may kill us from here on

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    monitor = gh.GradientHealthMonitor(every=1, csv=csv, buffer_steps=4)
    model.fit(x, x[:, :1], batch_size=1, epochs=10_000, verbose=0,
              callbacks=[monitor, Mark()])
""")


def test_kill_9_leaves_a_csv_of_whole_steps(tmp_path):
    csv, marker = tmp_path / "log.csv", tmp_path / "started"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(csv), str(marker)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, "the training subprocess died on its own"
            assert time.monotonic() < deadline, "training did not start in 300 s"
            time.sleep(0.2)
        time.sleep(1.0)  # well inside training, between or during writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = pd.read_csv(csv)
    assert list(log.columns) == list(HISTORY_COLUMNS)
    per_step = log.groupby("step").size()
    assert len(per_step) >= 40  # the marker came after 40 steps, pulled in blocks of 4
    assert (per_step == 4).all()  # every step on disk is whole (4 variables)
    assert list(per_step.index) == list(range(len(per_step)))  # no gaps
    assert log.grad_norm.notna().all()


def test_tensorboard_scalars_and_histograms_read_by_tbparse(tmp_path):
    tbparse = pytest.importorskip("tbparse")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")
    monitor = GradientHealthMonitor(every=2, log_dir=tmp_path / "tb", buffer_steps=3)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    history = monitor.history
    # TensorFlow 2 summaries are tensor events: tbparse lists them under `tensors`
    tensors = tbparse.SummaryReader(str(tmp_path / "tb")).tensors
    glob = tensors[tensors.tag == "gradients/global_norm"].sort_values("step")
    assert list(glob.step) == sorted(history.step.unique())
    expected = history.groupby("step").global_norm.first().to_numpy()
    np.testing.assert_allclose(glob.value.to_numpy(np.float64), expected, rtol=1e-6)
    hists = tensors[tensors.tag.str.startswith("grad_hist/")]
    paths = list(history.path.unique())
    assert {f"grad_hist/{p}" for p in paths} == set(hists.tag)
    assert len(hists) == len(paths) * history.step.nunique()
    # each histogram counts every (finite) entry of its variable once, over [-max, max]
    sizes = {p: int(np.prod(v.shape)) for p, v in
             zip(paths, model.trainable_variables, strict=True)}
    for _, row in hists.iterrows():
        path = row.tag.removeprefix("grad_hist/")
        buckets = np.asarray(row.value, dtype=np.float64)  # [left, right, count] per bucket
        assert int(round(buckets[:, 2].sum())) == sizes[path], path
        step = history[(history.step == row.step) & (history.path == path)]
        m = float(step.grad_max_abs.iloc[0])
        assert buckets[-1, 1] == pytest.approx(m, rel=1e-5)
        assert buckets[0, 0] == pytest.approx(-m, rel=1e-5)
