"""`python tests/fault_main.py ARGS`: `python main.py ARGS` with the faults of tests/faults.py that
the environment asks for (FAULT_SIGTERM_AFTER_STEP, FAULT_FAIL_RANK, FAULT_SIGKILL_AFTER_STEP,
FAULT_SIGKILL_IN_SAVE, FAULT_CTRL_C_AFTER_STEP). Works under torchrun too."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the toolkit (and tests.faults) as main.py itself would

from tests.faults import install_from_env

if __name__ == "__main__":
    install_from_env()
    runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
