#!/usr/bin/env bash
# One command on a fresh machine:
#   ./setup_and_run.sh          create transformer_env/, install, run the main job
#   ./setup_and_run.sh test     create transformer_env/, install, run the whole test suite
# Extra arguments after the mode go to main.py (or to pytest with "test").
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
ENV_DIR="transformer_env"
mode="${1:-run}"
[ $# -gt 0 ] && shift

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
case "$mode" in
  test)
    echo "==> running the test suite"
    exec python -m pytest -q tests "$@"
    ;;
  run)
    echo "==> running: python main.py --version both $*"
    exec python main.py --version both "$@"
    ;;
  *)
    echo "usage: ./setup_and_run.sh [run|test] [extra arguments]" >&2
    exit 2
    ;;
esac
