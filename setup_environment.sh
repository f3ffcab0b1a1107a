#!/usr/bin/env bash
# Week 5: Gradient Problems in Deep Networks - one-step environment setup.
#
# Creates the course environment, installs gradhealth and the notebook packages, registers the
# Jupyter kernel "week5-gradients" (display name "Week 5: Gradients (Python 3.x)", x = the
# environment's Python minor version; figures always inline), and writes the student edition of
# the notebooks to build/student/. Safe to run again: it updates what exists.
#
#   bash setup_environment.sh              micromamba/conda env if available, else .venv
#   bash setup_environment.sh --venv       always use a virtual environment (.venv)
#   bash setup_environment.sh --no-install only (re)register the kernel of an installed env
#   bash setup_environment.sh --dry-run    print the commands without running them
#
# Environment variables: PYTHON (interpreter for the venv, default python3), VENV_DIR (default
# .venv). See SETUP_GUIDE.md for Windows (PowerShell) and troubleshooting.
set -euo pipefail

ENV_NAME="week5-gradients"
KERNEL_NAME="week5-gradients"
PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-.venv}"

use_venv=0
install=1
dry_run=0
for arg in "$@"; do
    case "$arg" in
        --venv) use_venv=1 ;;
        --no-install) install=0 ;;
        --dry-run) dry_run=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup_environment.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# Everything is relative to the repository root (where this script lives).
cd "$(dirname "$0")"

run() {
    printf '+'
    printf ' %q' "$@"
    echo
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

# "Week 5: Gradients (Python 3.11)": the version of the interpreter that runs the kernel.
kernel_display_name() {
    echo "Week 5: Gradients (Python $1)"
}

python_version_of() {
    "$@" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")'
}

manager=""
if [ "$use_venv" -eq 0 ]; then
    if command -v micromamba >/dev/null 2>&1; then
        manager="micromamba"
    elif command -v conda >/dev/null 2>&1; then
        manager="conda"
    fi
fi

if [ -n "$manager" ]; then
    echo "Using $manager environment '$ENV_NAME' (environment.yml)"
    if "$manager" env list 2>/dev/null | awk '{print $1}' | grep -qx "$ENV_NAME"; then
        if [ "$install" -eq 1 ]; then
            # MAMBA_ALWAYS_YES answers micromamba's confirmation prompt; conda ignores it.
            MAMBA_ALWAYS_YES=true run "$manager" env update -n "$ENV_NAME" -f environment.yml
        fi
    else
        if [ "$install" -eq 0 ] && [ "$dry_run" -eq 0 ]; then
            echo "setup_environment.sh: environment '$ENV_NAME' does not exist; run without --no-install" >&2
            exit 1
        fi
        if [ "$manager" = "micromamba" ]; then
            run micromamba create -y -f environment.yml
        else
            run conda env create -f environment.yml
        fi
    fi
    py=("$manager" run -n "$ENV_NAME" python)
    if [ "$dry_run" -eq 1 ]; then
        # The env may not exist yet: its Python is the one pinned in environment.yml.
        version="$(sed -n 's/^[[:space:]]*-[[:space:]]*python=\([0-9]*\.[0-9]*\).*/\1/p' environment.yml)"
    fi
    activate="$manager activate $ENV_NAME"
else
    echo "Using a virtual environment in $VENV_DIR (no micromamba/conda found, or --venv)"
    if [ ! -d "$VENV_DIR" ]; then
        if [ "$install" -eq 0 ] && [ "$dry_run" -eq 0 ]; then
            echo "setup_environment.sh: $VENV_DIR does not exist; run without --no-install" >&2
            exit 1
        fi
        run "$PYTHON" -m venv "$VENV_DIR"
    fi
    if [ -x "$VENV_DIR/Scripts/python.exe" ]; then   # Git Bash on Windows
        py=("$VENV_DIR/Scripts/python.exe")
        activate="source $VENV_DIR/Scripts/activate"
    else
        py=("$VENV_DIR/bin/python")
        activate="source $VENV_DIR/bin/activate"
    fi
    if [ "$install" -eq 1 ]; then
        run "${py[@]}" -m pip install --upgrade pip
        run "${py[@]}" -m pip install -r requirements.txt
    fi
    if [ "$dry_run" -eq 1 ] && [ ! -x "${py[0]}" ]; then
        py=("$PYTHON")   # the venv does not exist yet; it will have this interpreter's version
    fi
fi

if [ -z "${version:-}" ]; then
    version="$(python_version_of "${py[@]}")"
fi
display_name="$(kernel_display_name "$version")"

if [ "$dry_run" -eq 0 ] && ! "${py[@]}" -c 'import ipykernel' >/dev/null 2>&1; then
    echo "setup_environment.sh: ipykernel is not installed in the environment; run without --no-install" >&2
    exit 1
fi
# MPLBACKEND in the kernel spec: a shell that exports MPLBACKEND=Agg (common on servers) would
# otherwise hand it to the kernel, and no figure would show in the notebooks.
run "${py[@]}" -m ipykernel install --user --name "$KERNEL_NAME" --display-name "$display_name" \
    --env MPLBACKEND "module://matplotlib_inline.backend_inline"

# The notebooks to work in: exercise answers and instructor cells removed (make student).
if [ "$install" -eq 1 ]; then
    run "${py[@]}" -m gradhealth.course edition student --out build/student
fi

if [ "$dry_run" -eq 0 ]; then
    echo "Checking the installation:"
    "${py[@]}" -m gradhealth.cli --backend
fi

if [ "$dry_run" -eq 1 ]; then
    echo "(dry run: nothing was changed)"
fi
cat <<EOF

Done. Jupyter kernel '$KERNEL_NAME' is registered as "$display_name".
Next steps:
  1. $activate
  2. gradhealth demo                 # checkups of the three demo networks -> build/reports/
  3. jupyter lab build/student/      # your copy of the notebooks; kernel "$display_name"
Or from the repository root: make demo (reports + executed notebooks with figures),
make student / make instructor (editions), make slides, make docs (site), make test.
EOF
