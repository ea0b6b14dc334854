#!/usr/bin/env bash
# One command on a fresh machine:
#   ./setup_and_run.sh                   create transformer_env/, install, run the main job
#   ./setup_and_run.sh test              create transformer_env/, install, run the whole test suite
#   ./setup_and_run.sh --task addition   the main job with extra flags (the mode "run" is implied)
#   ./setup_and_run.sh run --epochs 1    the same, with the mode spelled out
#   ./setup_and_run.sh test -k cli       extra arguments after "test" go to pytest
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  echo "usage: ./setup_and_run.sh [run|test] [extra arguments for main.py, or for pytest with test]" >&2
  exit 2
}

# The mode, then the rest for the job. Checked before installing anything, so a typo costs nothing.
mode=run
if [ $# -gt 0 ]; then
  case "$1" in
    run | test) mode="$1"; shift ;;
    -*) ;;  # flags without a mode: the main job's (./setup_and_run.sh --task addition)
    *) usage ;;
  esac
fi

PYTHON="${PYTHON:-python3}"
ENV_DIR="transformer_env"
if [ ! -x "$ENV_DIR/bin/python" ]; then
  echo "==> creating virtual environment $ENV_DIR/"
  "$PYTHON" -m venv "$ENV_DIR"
fi
# shellcheck disable=SC1091
source "$ENV_DIR/bin/activate"
echo "==> installing requirements.txt (torch is pinned to the CPU-sized 2.13.0)"
python -m pip install --quiet --upgrade pip 2>/dev/null || true
# (the grep only hides this machine's harmless "Location ... is ignored" index warnings)
if ! python -m pip install --quiet -r requirements.txt 2> >(grep -v "is ignored: it is neither" >&2); then
  echo "setup_and_run.sh: installing requirements.txt failed (see above)" >&2
  exit 1
fi
python -c "import torch, transformers; print(f'==> torch {torch.__version__}, transformers {transformers.__version__}')"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ "$mode" = test ]; then
  echo "==> running the test suite"
  exec python -m pytest -q tests "$@"
fi
echo "==> running: python main.py --version both $*"
exec python main.py --version both "$@"
