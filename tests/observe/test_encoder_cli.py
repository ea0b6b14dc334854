"""`python main.py --debug --visualize --track_internals` for the encoder-only families, as a user runs
it: exit code 0, the encoder-only trace in the log, analysis_report.json with its encoder_only section
and the figures of the family in results_pytorch/visualizations/. A tiny model and one epoch: most of
the time is the start-up and the figure catalogue: about 20 s each on 2 cores, so both are `slow`; the
same path in-process, faster, is tests/observe/test_encoder_observe.py's write_analysis test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TINY = ["--hidden_size", "32", "--num_layers", "2", "--num_heads", "4", "--ffn_size", "64", "--epochs", "1"]
WATCH = ["--debug", "--visualize", "--track_internals", "--quiet"]
RUNS = {
    "bert": (["--arch", "bert", "--task", "palindrome", "--train_size", "200", "--eval_size", "50"],
             "special_tokens.png", "predicted class: "),
    "vit": (["--arch", "vit", "--batch_size", "256"], "vit_cls_attention.png", "[CLS] -> itself"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "vit"])
def test_debug_visualize_track_internals_from_the_command_line(arch, tmp_path):
    flags, figure, traced = RUNS[arch]
    command = [sys.executable, str(ROOT / "main.py"), "--version", "pytorch", *flags, *TINY, *WATCH,
               "--output_dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "ENCODER-ONLY MODEL" in log and traced in log and "Traceback" not in log
    results = tmp_path / "results_pytorch"
    report = json.loads((results / "analysis_report.json").read_text())
    assert report["family"] == "encoder-only" and report["encoder_only"]["head"] == "classifier"
    assert (results / "visualizations" / "encoder" / figure).exists()
    assert (
        results / "visualizations" / "attention" / "multihead_comparison_encoder_self_layer1.png"
    ).exists()
    assert json.loads((results / "internals.json").read_text())["family"] == "encoder-only"
