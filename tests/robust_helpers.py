"""Shared by the tests/test_robust_*.py files: one tiny run, and ways to start and compare runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# one thread per process, so a run gives the same floats in-process and in a subprocess
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# 10 batches per epoch, 2 epochs, dropout on (so the RNG state matters), under a second of compute
TINY = dict(task="copy", seed=3, device="cpu", train_size=300, eval_size=20, min_len=2, max_len=4,
            hidden_size=32, num_layers=1, num_heads=4, ffn_size=64, dropout=0.1, epochs=2,
            batch_size=32, warmup_steps=20, quiet=True)  # fmt: skip


def flags(**settings) -> list[str]:
    """RunConfig settings as main.py flags."""
    out = []
    for key, value in settings.items():
        if isinstance(value, bool):
            out.append(f"--{key}" if value else f"--no-{key}")
        else:
            out += [f"--{key}", str(value)]
    return out


def main_script(env: dict | None) -> str:
    """main.py, or tests/fault_main.py when `env` asks for faults (tests/faults.py)."""
    return "tests/fault_main.py" if any(k.startswith("FAULT_") for k in env or {}) else "main.py"


def run_main(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python main.py ARGS` as a user runs it (with the network blocked, see tests/conftest.py).
    With FAULT_* variables in `env`, through tests/fault_main.py, which injects those faults."""
    return subprocess.run(
        [sys.executable, str(ROOT / main_script(env)), *args],
        cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


WARNING_LINE = re.compile(r"^\S.*:\d+: \w*Warning: ")


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, without Python warnings (the warning line and its source line)."""
    lines, skip_source = [], False
    for line in stderr.splitlines():
        if WARNING_LINE.match(line):
            skip_source = True
            continue
        if skip_source and line.startswith(" "):
            skip_source = False
            continue
        skip_source = False
        if line.strip():
            lines.append(line)
    return lines


def assert_one_error_line(code: int, stdout: str, stderr: str, fragment: str, exit_code: int = 2) -> str:
    """Exit code, no traceback, exactly one `main.py: error:` line holding `fragment`."""
    lines = error_lines(stderr)
    assert code == exit_code, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    assert lines[0].startswith("main.py: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def main_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    import main

    capsys.readouterr()
    try:
        code = main.main(argv)
    except SystemExit as exit_:  # argparse leaves this way
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def metrics_without_time(folder: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields (named *_s), which no two runs share."""
    lines = (folder / "logs" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in lines]


def assert_same_tensors(a: dict, b: dict) -> None:
    """Bitwise equal: same keys, torch.equal on every tensor (nested dicts of the optimizer too)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key])
        else:
            assert a[key] == b[key], key
