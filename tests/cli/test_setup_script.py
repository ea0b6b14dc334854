"""setup_and_run.sh hands its extra arguments to the right job, installing nothing to find out.

The script runs for real, but as a copy in a temporary folder whose transformer_env/ is fake: its
`python` only records how it was called, and the pip installs and the final `exec` all reach it.
Nothing of this checkout (its virtual environment, main.py, the test suite) is in reach.
(setup_and_run.bat needs cmd.exe; it is not run here.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
    pytest.mark.slow,
]  # slow: the setup script in a temporary folder

FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_PYTHON_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "offline": os.environ.get("HF_HUB_OFFLINE")}}) + "\\n")
"""


@pytest.fixture
def fake_env(tmp_path) -> Path:
    """A folder holding a copy of the script and a fake transformer_env/ next to it."""
    shutil.copy2(ROOT / "setup_and_run.sh", tmp_path / "setup_and_run.sh")
    bin_dir = tmp_path / "transformer_env" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    return tmp_path


def setup_and_run(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the script's copy; its result and each call of the fake python, in order."""
    log = folder / "calls.jsonl"
    fake = str(folder / "transformer_env" / "bin" / "python")
    env = {**os.environ, "FAKE_PYTHON_LOG": str(log), "PYTHON": fake}  # PYTHON: what makes the venv
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        ["bash", str(folder / "setup_and_run.sh"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


@pytest.mark.parametrize(
    "args, job",
    [
        ([], ["main.py", "--version", "both"]),
        (["run"], ["main.py", "--version", "both"]),
        (["--task", "addition"], ["main.py", "--version", "both", "--task", "addition"]),
        (["run", "--epochs", "1"], ["main.py", "--version", "both", "--epochs", "1"]),
        (["--source", "two words", "--epochs=2"], ["main.py", "--version", "both", "--source", "two words",
                                                   "--epochs=2"]),
        (["test"], ["-m", "pytest", "-q", "tests"]),
        (["test", "-k", "cli and not slow"], ["-m", "pytest", "-q", "tests", "-k", "cli and not slow"]),
        (["test", "--task", "run"], ["-m", "pytest", "-q", "tests", "--task", "run"]),
    ],
)  # fmt: skip
def test_extra_arguments_reach_the_job(fake_env, args, job):
    result, calls = setup_and_run(fake_env, *args)
    assert result.returncode == 0, result.stderr
    assert [c["argv"][:2] for c in calls[:2]] == [["-m", "pip"], ["-m", "pip"]], calls  # installs first
    assert calls[-1]["argv"] == job
    assert calls[-1]["offline"] == "1"  # the job never downloads


@pytest.mark.parametrize("args", [["tset"], ["addition", "--epochs", "1"], [""]])
def test_an_unknown_mode_is_the_usage_line_before_installing_anything(fake_env, args):
    result, calls = setup_and_run(fake_env, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ./setup_and_run.sh [run|test]")
    assert calls == []
