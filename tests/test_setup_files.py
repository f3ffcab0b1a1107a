"""The course setup files agree with each other, with pyproject.toml and with this environment.

requirements.txt, environment.yml, setup_environment.sh and SETUP_GUIDE.md promise the same
environment name, kernel name and display name, and the same dependencies as pyproject.toml.
setup_environment.sh is run for real in its kernel-registration mode (into a temporary Jupyter
data folder) and in dry-run mode for the venv and micromamba paths.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gradhealth._internal.env import QUIET_ENV
from gradhealth.course.editions import FIGURE, INSTRUCTOR, OPTIONAL, SOLUTION, SPEAKER_NOTES
from gradhealth.course.runner import INLINE_BACKEND

ROOT = Path(__file__).resolve().parents[1]
ENV_NAME = "week5-gradients"
#: requirements.txt may name `tensorflow` where `tensorflow-cpu` has no wheel (macOS, ARM).
PLATFORM_ALTERNATIVES = {"tensorflow": "tensorflow-cpu"}
BASH = shutil.which("bash")


def _display_name(version: str) -> str:
    return f"Week 5: Gradients (Python {version})"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _course_deps() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]
            ["notebooks"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _requirements_txt() -> tuple[list[Requirement], list[str]]:
    reqs, editable = [], []
    for raw in (ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e "):
            editable.append(line[3:].strip())
        else:
            reqs.append(Requirement(line))
    return reqs, editable


def _lower_bound(req: Requirement) -> str | None:
    found = [s.version for s in req.specifier if s.operator in (">=", "==")]
    return found[0] if found else None


def _environment_yml() -> str:
    return (ROOT / "environment.yml").read_text()


def _env_python() -> str:
    match = re.search(r"^\s*-\s*python=(\d+\.\d+)\s*$", _environment_yml(), re.M)
    assert match, "environment.yml must pin python=X.Y"
    return match.group(1)


def test_requirements_pin_every_course_dependency_with_pyproject_lower_bounds():
    deps = _course_deps()
    reqs, editable = _requirements_txt()
    by_name: dict[str, list[Requirement]] = {}
    for r in reqs:
        by_name.setdefault(canonicalize_name(r.name), []).append(r)
    assert set(deps) <= set(by_name), set(deps) - set(by_name)
    for name, group in by_name.items():
        source = deps.get(name) or deps.get(PLATFORM_ALTERNATIVES.get(name, ""))
        assert source is not None, f"requirements.txt lists {name}, which pyproject does not"
        for r in group:
            assert _lower_bound(r) == _lower_bound(source), (r, source)
            assert any(s.operator == "<" for s in r.specifier), f"{r} needs an upper bound"
    assert "torch" not in by_name and "jax" not in by_name
    assert editable == [".[notebooks]"]


def test_platform_alternatives_cover_every_platform_exactly_once():
    reqs, _ = _requirements_txt()
    tf = [r for r in reqs if canonicalize_name(r.name) in ("tensorflow", "tensorflow-cpu")]
    platforms = [{"sys_platform": p, "platform_machine": m}
                 for p, machines in (("linux", ("x86_64", "aarch64")), ("darwin", ("arm64",
                                     "x86_64")), ("win32", ("AMD64", "ARM64")))
                 for m in machines]
    for env in platforms:
        chosen = [r.name for r in tf if r.marker is None or r.marker.evaluate(env)]
        assert len(chosen) == 1, (env, chosen)


def test_this_environment_satisfies_the_requirement_ranges():
    reqs, _ = _requirements_txt()
    checked = 0
    for r in reqs:
        if r.marker is not None and not r.marker.evaluate():
            continue
        version = metadata.version(r.name)
        assert r.specifier.contains(version, prereleases=True), (r, version)
        checked += 1
    applicable = [r for r in _course_deps().values() if r.marker is None or r.marker.evaluate()]
    assert checked == len(applicable)


def test_environment_yml_names_the_env_and_installs_the_package_with_notebooks():
    text = _environment_yml()
    assert re.search(rf"^name:\s*{ENV_NAME}\s*$", text, re.M)
    assert re.search(r"^\s*-\s*-e \.\[notebooks\]\s*$", text, re.M)
    requires = _pyproject()["project"]["requires-python"]
    assert requires.startswith(">=")
    minimum = tuple(int(p) for p in requires[2:].split("."))
    assert tuple(int(p) for p in _env_python().split(".")) >= minimum


def test_setup_script_is_valid_bash_and_names_the_env_and_kernel():
    assert BASH is not None
    subprocess.run([BASH, "-n", str(ROOT / "setup_environment.sh")], check=True)
    text = (ROOT / "setup_environment.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert f'ENV_NAME="{ENV_NAME}"' in text and f'KERNEL_NAME="{ENV_NAME}"' in text


def _copy_setup_files(dest: Path) -> Path:
    for name in ("setup_environment.sh", "requirements.txt", "environment.yml"):
        shutil.copy(ROOT / name, dest / name)
    return dest / "setup_environment.sh"


def _run_script(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(script), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_dry_run_venv_path_names_the_kernel_after_the_running_python(tmp_path):
    script = _copy_setup_files(tmp_path)
    done = _run_script(script, "--venv", "--dry-run", PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "-m venv .venv" in done.stdout
    assert "-m pip install -r requirements.txt" in done.stdout
    kernel_line = next(line for line in done.stdout.splitlines() if "ipykernel install" in line)
    words = shlex.split(kernel_line)  # the script prints each argument shell-quoted
    assert words[words.index("--name") + 1] == ENV_NAME
    assert words[words.index("--display-name") + 1] == _display_name(version)
    # figures inline in a user's Jupyter even where the shell exports MPLBACKEND=Agg
    assert words[words.index("--env") + 1:words.index("--env") + 3] == [
        "MPLBACKEND", INLINE_BACKEND]
    assert "-m gradhealth.course edition student --out build/student" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "environment.yml", "requirements.txt", "setup_environment.sh"]  # nothing changed


def test_dry_run_micromamba_path_creates_the_env_from_environment_yml(tmp_path):
    script = _copy_setup_files(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "micromamba"
    fake.write_text("#!/bin/sh\nexit 0\n")  # `env list` prints no environment
    fake.chmod(0o755)
    done = _run_script(script, "--dry-run", PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert "+ micromamba create -y -f environment.yml" in done.stdout
    assert f"micromamba run -n {ENV_NAME} python -m ipykernel install" in done.stdout
    assert f'"{_display_name(_env_python())}"' in done.stdout  # the next-steps text


def test_no_install_registers_the_kernel_for_this_environment(tmp_path):
    script = _copy_setup_files(tmp_path)
    data_dir = tmp_path / "jupyter"
    done = _run_script(script, "--no-install", VENV_DIR=sys.prefix,
                       JUPYTER_DATA_DIR=str(data_dir))
    assert done.returncode == 0, done.stderr
    spec = json.loads((data_dir / "kernels" / ENV_NAME / "kernel.json").read_text())
    assert spec["display_name"] == _display_name(
        f"{sys.version_info.major}.{sys.version_info.minor}")
    assert Path(spec["argv"][0]).parent.parent.resolve() == Path(sys.prefix).resolve()
    assert "backend" in done.stdout  # the installation check ran gradhealth


def test_setup_guide_covers_commands_kernel_and_troubleshooting():
    guide = (ROOT / "SETUP_GUIDE.md").read_text()
    for needle in ("make demo", "make test", "make student", "make instructor", "make slides",
                   "make docs", "build/student", "chromium", "setup_environment.sh", "environment.yml",
                   "requirements.txt", "PowerShell", "KERAS_BACKEND", "load_digits",
                   f"python -m ipykernel install --user --name {ENV_NAME}",
                   _display_name(_env_python()), "jupyter kernelspec list"):
        assert needle in guide, needle
    for key, value in QUIET_ENV.items():
        assert f"{key}={value}" in guide, key


def test_committed_notebooks_use_the_kernel_the_setup_registers():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        spec = json.loads(path.read_text())["metadata"].get("kernelspec", {})
        assert spec.get("name") == ENV_NAME, path.name
        assert spec.get("display_name") == _display_name(_env_python()), path.name



def test_setup_guide_documents_every_cell_convention():
    guide = (ROOT / "SETUP_GUIDE.md").read_text()
    for tag in (SOLUTION, INSTRUCTOR, SPEAKER_NOTES, OPTIONAL, FIGURE):
        assert f"| `{tag}` |" in guide, tag


MAKE = shutil.which("make")


@pytest.mark.parametrize("target", ["demo", "student", "instructor", "slides", "docs", "test"])
def test_make_targets_set_themselves_up_on_a_fresh_clone(target, tmp_path):
    """`make -n` in a copy with no .venv and no build/: every step from python3 onwards."""
    assert MAKE is not None, "make is not installed"
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "src" / "gradhealth" / "course").mkdir(parents=True)
    shutil.copy(ROOT / "src/gradhealth/course/render.py", tmp_path / "src/gradhealth/course")
    done = subprocess.run([MAKE, "-n", target, "PYTHON=python3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    steps = done.stdout
    assert "python3 -m venv .venv" in steps
    assert "pip --disable-pip-version-check -q install -e" in steps
    assert "MPLBACKEND" not in steps.replace("--env MPLBACKEND", "")
    expected = {
        "demo": ["gradhealth demo --out build/reports", "gradhealth.course run --out build/notebooks",
                 "gradhealth.course pages build/notebooks/*.html", "apt-get install -y -q chromium"],
        "student": ["gradhealth.course edition student --out build/student"],
        "instructor": ["gradhealth.course run --out build/notebooks",
                       "gradhealth.course edition instructor --out build/instructor"],
        "slides": ["download --no-deps -d build/wheels", "gradhealth.course vendor",
                   "gradhealth.course slides --out build/slides"],
        "docs": [".[notebooks,docs]", "gradhealth.course site-src", "mkdocs build --strict"],
        "test": [".[dev,notebooks,docs]", "ruff check", "lint-imports", "KERAS_BACKEND=jax"],
    }[target]
    for step in expected:
        assert step in steps, f"make {target} does not run {step!r}:\n{steps}"


def _imported_top_level_modules(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_package_the_library_imports_is_declared_in_pyproject():
    """threadpoolctl was imported by `gradhealth.init.propagation` but declared nowhere: only
    scikit-learn's dependencies installed it, and dropping scikit-learn broke notebook 5 in a
    fresh course environment."""
    project = _pyproject()["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {canonicalize_name(Requirement(r).name) for r in extra}
    declared |= {"tensorflow", "jax", "jaxlib"}  # through tensorflow-cpu and jax[cpu]
    # Modules that come with a declared package (Jupyter's tornado, nbconvert's jinja2, ...).
    distributions = metadata.packages_distributions()
    modules = set()
    for path in (ROOT / "src" / "gradhealth").rglob("*.py"):
        modules |= _imported_top_level_modules(path)
    third_party = {m for m in modules if m not in sys.stdlib_module_names and m != "gradhealth"}
    undeclared = {}
    for module in sorted(third_party):
        dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not dists & declared and not any(_required_by_declared(d, declared) for d in dists):
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported by gradhealth, declared nowhere in pyproject: {undeclared}"
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert "threadpoolctl" in core


def _required_by_declared(dist: str, declared: set[str]) -> bool:
    """Whether a declared package requires ``dist`` (e.g. nbconvert -> jinja2)."""
    for name in declared:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        if any(canonicalize_name(Requirement(r).name) == dist for r in requires
               if "extra ==" not in r):
            return True
    return False
