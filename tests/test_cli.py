"""Tests of the ``gradhealth`` command: each command, each exit code, one-line errors.

The commands run in-process through :func:`gradhealth.cli.main`; one test runs the installed
console script to prove the entry point and the exit-code propagation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import gradhealth as gh
from gradhealth import cli
from gradhealth.data import digits_batch
from gradhealth.models import DEMO_NETWORKS, classification_loss, deep_mlp

DATA_EXAMPLES = 64
LOSS_NAME = "sparse_categorical_crossentropy"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gradhealth: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A compiled and an uncompiled saved model, a data archive and a few broken inputs."""
    root = tmp_path_factory.mktemp("cli_inputs")
    x, y = digits_batch(DATA_EXAMPLES)
    compiled = deep_mlp(3, 16, "relu", "he_normal", seed=1, name="small_relu")
    compiled.compile(optimizer="sgd", loss=classification_loss())
    compiled.save(root / "compiled.keras")
    deep_mlp(3, 16, "relu", "he_normal", output_activation="softmax", seed=2,
             name="plain_relu").save(root / "plain.keras")
    np.savez(root / "data.npz", x=x, y=y)
    np.savez(root / "no_y.npz", x=x, labels=y)
    np.savez(root / "mismatch.npz", x=x, y=y[: DATA_EXAMPLES // 2])
    np.save(root / "single.npy", x)
    (root / "junk.npz").write_text("not an archive")
    (root / "junk.keras").write_text("not a model")
    (root / "a_file").write_text("")
    return {p.name: p for p in root.iterdir()}


def test_checkup_demo_sigmoid_prints_table_writes_reports_and_exits_1(tmp_path, capsys):
    code = cli.main(["checkup", "--demo", "sigmoid", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_UNHEALTHY
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["status"] == "vanishing"
    for row in saved["layers"]:  # every layer of the report is a row of the printed table
        assert row["layer"] in out
    assert "Findings" in out and "Recommendations" in out
    assert saved["findings"][0].split()[0] in out
    assert keras.backend.backend() in out  # the backend info line
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_checkup_demo_relu_quiet_defaults_to_current_folder_and_exits_0(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["checkup", "--demo", "relu", "--quiet"]) == cli.EXIT_OK
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "relu: healthy" in out[0]
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "healthy"


@pytest.mark.slow  # the CLI's orchestration; its checkups are tested on every backend
def test_demo_writes_every_report_and_an_index(tmp_path, capsys):
    out_dir = tmp_path / "reports"
    assert cli.main(["demo", "--out", str(out_dir)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    expected_files = {f"{k}{ext}" for k in DEMO_NETWORKS for ext in (".html", ".json")}
    assert {p.name for p in out_dir.iterdir()} == expected_files | {"index.html"}
    index = (out_dir / "index.html").read_text()
    for kind in DEMO_NETWORKS:
        saved = json.loads((out_dir / f"{kind}.json").read_text())
        assert saved["status"] == cli.EXPECTED_DEMO_STATUS[kind]
        assert f"href='{kind}.html'" in index
        assert kind in out
        norms = [row["grad_norm"] for row in saved["layers"]]
        assert f"{norms[0]:.3g}" in out and f"{norms[-1]:.3g}" in out  # first/last columns


@pytest.mark.slow  # the CLI's orchestration; its checkups are tested on every backend
def test_demo_exits_1_when_a_diagnosis_is_not_the_expected_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(cli.EXPECTED_DEMO_STATUS, "relu", "exploding")
    assert cli.main(["demo", "--quiet", "--out", str(tmp_path)]) == cli.EXIT_UNHEALTHY
    assert "relu: diagnosed healthy, expected exploding" in capsys.readouterr().out


def _library_report(model_path: Path, x, y, loss=None) -> gh.HealthReport:
    return gh.checkup(keras.saving.load_model(model_path), x, y, loss=loss)


def test_checkup_saved_compiled_model_matches_the_library(files, tmp_path, capsys):
    code = cli.main(["checkup", str(files["compiled.keras"]), "--data", str(files["data.npz"]),
                     "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "report.json").read_text())
    x, y = digits_batch(DATA_EXAMPLES)
    ref = _library_report(files["compiled.keras"], x, y)
    assert code == (cli.EXIT_OK if ref.status == "healthy" else cli.EXIT_UNHEALTHY)
    assert saved["status"] == ref.status and saved["score"] == ref.score
    np.testing.assert_allclose([r["grad_norm"] for r in saved["layers"]],
                               ref.layers["grad_norm"], rtol=1e-5)
    assert "small_relu" in capsys.readouterr().out


def test_checkup_saved_model_with_loss_and_batch(files, tmp_path, capsys):
    batch = DATA_EXAMPLES // 4
    code = cli.main(["checkup", str(files["plain.keras"]), "--data", str(files["data.npz"]),
                     "--loss", LOSS_NAME, "--batch", str(batch), "--out", str(tmp_path), "-q"])
    saved = json.loads((tmp_path / "report.json").read_text())
    x, y = digits_batch(DATA_EXAMPLES)
    ref = _library_report(files["plain.keras"], x[:batch], y[:batch], loss=LOSS_NAME)
    assert code == (cli.EXIT_OK if ref.status == "healthy" else cli.EXIT_UNHEALTHY)
    assert saved["loss"] == pytest.approx(ref.loss, rel=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in saved["layers"]],
                               ref.layers["grad_norm"], rtol=1e-5)
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["checkup", "missing.keras", "--data", "{data.npz}"], "model file not found"),
        (["checkup", "{compiled.keras}", "--data", "missing.npz"], "data file not found"),
        (["checkup", "{compiled.keras}", "--data", "{no_y.npz}"], "no array 'y'"),
        (["checkup", "{compiled.keras}", "--data", "{junk.npz}"], "could not read"),
        (["checkup", "{compiled.keras}", "--data", "{single.npy}"], "single .npy array"),
        (["checkup", "{junk.keras}", "--data", "{data.npz}"], "not a valid Keras model file"),
        (["checkup", "{plain.keras}", "--data", "{data.npz}"], "--loss NAME"),
        (["checkup", "{plain.keras}", "--data", "{data.npz}", "--loss", "nope"], "loss='nope'"),
        (["checkup", "{compiled.keras}", "--data", "{mismatch.npz}"], f"y.shape=({DATA_EXAMPLES // 2},)"),
        (["checkup", "{compiled.keras}", "--data", "{data.npz}", "--batch", "100000"],
         "more examples"),
        (["checkup", "{compiled.keras}"], "needs --data"),
        (["checkup", "{compiled.keras}", "--demo", "relu"], "not both"),
        (["checkup"], "not both"),
        (["checkup", "--demo", "relu", "--data", "{data.npz}"], "not with --demo"),
        (["checkup", "--demo", "tanh"], "invalid choice"),
        (["checkup", "--demo", "relu", "--batch", "0"], "positive integer"),
        (["checkup", "--demo", "relu", "--out", "{a_file}"], "is a file"),
        (["frobnicate"], "invalid choice"),
        ([], "choose a command"),
    ],
)
def test_usage_and_input_errors_exit_2_with_one_line(files, capsys, args, needle):
    named = {f"{{{name}}}": str(path) for name, path in files.items()}
    argv = [named.get(a, a) for a in args]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert needle in _one_line_error(capsys)


def test_version_and_backend_info(capsys):
    assert cli.main(["--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == f"gradhealth {gh.__version__}"
    assert cli.main(["--backend"]) == cli.EXIT_OK
    line = capsys.readouterr().out.strip()
    assert f"backend {keras.backend.backend()}" in line and keras.__version__ in line


def test_help_exits_0(capsys):
    assert cli.main(["checkup", "--help"]) == cli.EXIT_OK
    assert "--demo" in capsys.readouterr().out


def test_installed_console_script_runs_and_propagates_the_exit_code(tmp_path):
    script = shutil.which("gradhealth", path=str(Path(sys.executable).parent))
    assert script is not None, "the `gradhealth` console script is not installed in this env"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    done = subprocess.run([script, "checkup", "--demo", "exploding", "--quiet",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == cli.EXIT_UNHEALTHY, done.stderr
    assert "exploding: exploding" in done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["context"]["backend"] == \
        keras.backend.backend()


@pytest.fixture(scope="module")
def broken_models(files, tmp_path_factory) -> dict[str, Path]:
    """Damaged copies of a real .keras file: truncated, bit-flipped, and a zip without config."""
    root = tmp_path_factory.mktemp("broken_models")
    whole = files["compiled.keras"].read_bytes()
    (root / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    flipped = bytearray(whole)
    middle = len(flipped) // 2
    flipped[middle:middle + 64] = bytes(b ^ 0xFF for b in flipped[middle:middle + 64])
    (root / "flipped.keras").write_bytes(bytes(flipped))
    with zipfile.ZipFile(root / "noconfig.keras", "w") as z:
        z.writestr("metadata.json", "{}")
    (root / "folder.keras").mkdir()
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize(("name", "needle"), [
    ("truncated.keras", "not a valid Keras model file"),
    ("flipped.keras", "not a valid Keras model file"),
    ("noconfig.keras", "no config.json"),
    ("folder.keras", "is a folder"),
])
def test_damaged_model_files_get_their_own_message(files, broken_models, capsys, name, needle):
    code = cli.main(["checkup", str(broken_models[name]), "--data", str(files["data.npz"])])
    assert code == cli.EXIT_USAGE
    line = _one_line_error(capsys)
    assert needle in line and "not found" not in line


def test_library_noise_on_stderr_is_held_back_on_an_input_error(files, capfd, monkeypatch):
    """Keras warnings, Python-level and C-level stderr writes during loading: one line only."""

    def noisy_load(path, *args, **kwargs):
        warnings.warn("Skipping variable loading for optimizer 'adam'", UserWarning, stacklevel=2)
        print("absl-style log line", file=sys.stderr)
        os.write(2, b"C-level log line\n")
        raise ValueError("the model could not be built")

    monkeypatch.setattr(keras.saving, "load_model", noisy_load)
    code = cli.main(["checkup", str(files["compiled.keras"]), "--data", str(files["data.npz"])])
    assert code == cli.EXIT_USAGE
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gradhealth: error: could not load model")


def test_library_noise_is_passed_on_when_the_command_succeeds(files, tmp_path, capfd, monkeypatch):
    real_load = keras.saving.load_model

    def chatty_load(path, *args, **kwargs):
        warnings.warn("a harmless Keras notice", UserWarning, stacklevel=2)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", chatty_load)
    code = cli.main(["checkup", str(files["compiled.keras"]), "--data", str(files["data.npz"]),
                     "--out", str(tmp_path), "-q"])
    assert code in (cli.EXIT_OK, cli.EXIT_UNHEALTHY)
    assert "a harmless Keras notice" in capfd.readouterr().err
