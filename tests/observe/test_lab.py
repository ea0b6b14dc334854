"""The paper lab (pytorch_version/lab): every experiment runs on a tiny bench and draws a real PNG, and
the measured direction holds where the literature is unambiguous (seeds fixed, numbers asserted)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from pytorch_version.lab import EXPERIMENTS, chosen, run_experiments
from pytorch_version.lab.bench import Bench, Lab, calibration_error, constant_after_warmup
from pytorch_version.lab.signals import softmax_statistics
from pytorch_version.lab.training import focal
from pytorch_version.layers import layers_to_run
from utils.runtime.errors import UserError

PNG = b"\x89PNG\r\n\x1a\n"
TINY = Bench(hidden_size=32, num_heads=2, ffn_size=64, batch_size=16, steps=6, eval_size=32, max_len=6)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    (out / "report.md").write_text(
        "# Figures\n\n## attention_step_0.png\n\nthe catalogue\n", encoding="utf-8"
    )
    (out / "analysis_report.json").write_text(json.dumps({"family": "encoder-decoder"}), encoding="utf-8")
    return out, run_experiments(list(EXPERIMENTS), out, TINY)


def test_every_experiment_writes_a_figure_numbers_and_a_finding(lab_run):
    out, section = lab_run
    assert list(section) == list(EXPERIMENTS)
    for name, entry in section.items():
        assert (out / entry["figure"]).read_bytes()[:8] == PNG, name
        assert entry["numbers"] and entry["checks"] and entry["shows"], name
        assert any(ch.isdigit() for ch in entry["finding"]), name  # a finding states what was measured
    report = json.loads((out / "analysis_report.json").read_text(encoding="utf-8"))
    assert report["family"] == "encoder-decoder"  # the run's own analysis is kept
    assert report["experiments"]["scaling"]["finding"] == section["scaling"]["finding"]
    assert report["experiment_bench"]["steps"] == TINY.steps


def test_report_md_puts_the_findings_first_and_keeps_the_catalogue(lab_run):
    out, section = lab_run
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# The paper lab")
    for entry in section.values():
        assert entry["finding"] in text and f"]({entry['figure']})" in text
    assert "## attention_step_0.png" in text and "the catalogue" in text
    assert "## experiments/" not in text  # the catalogue does not list the experiments a second time


def test_findings_follow_from_the_numbers(lab_run):
    _, section = lab_run
    numbers = section["label_smoothing"]["numbers"]["held_out"]
    for name, scores in numbers.items():
        assert f"{scores['token_accuracy']:.1%}" in section["label_smoothing"]["finding"], name
    best = section["schedules"]["numbers"]["best"]
    losses = section["schedules"]["numbers"]["final_loss"]
    assert losses[best] == min(losses.values()) and f"{best} trains best" in section["schedules"]["finding"]


def test_residual_connections_raise_the_early_layers_gradient():
    """Without the residual path the decoder's first layer gets (almost) no gradient at initialisation:
    its only way to the loss is through every later sublayer (rank collapse of pure attention)."""
    lab = Lab(TINY.scaled(steps=1))
    norms = {
        on: lab.train(lab.config(num_layers=4, residual=on), constant_after_warmup(1e-3, 0)).gradient_norms[0]
        for on in (True, False)
    }
    assert norms[True]["decoder.0"] > 100 * norms[False]["decoder.0"]
    assert norms[True]["decoder.1"] > 10 * norms[False]["decoder.1"]


def test_without_scaling_softmax_entropy_falls_as_d_k_grows():
    widths = (4, 16, 64, 256)
    unscaled = [softmax_statistics(d, scaled=False)["entropy"] for d in widths]
    scaled = [softmax_statistics(d, scaled=True)["entropy"] for d in widths]
    assert all(a > b for a, b in itertools.pairwise(unscaled))
    assert unscaled[-1] < 0.2 < 0.8 < min(scaled)
    assert max(scaled) - min(scaled) < 0.1
    assert (
        softmax_statistics(256, scaled=False)["saturated"]
        > 0.5
        > softmax_statistics(256, scaled=True)["saturated"]
    )


def test_post_ln_without_warmup_is_less_stable_than_pre_ln():
    """Xiong et al. 2020: at the same high rate with no warm-up, pre-LN trains and post-LN stalls."""
    lab = Lab(TINY.scaled(hidden_size=64, num_heads=4, ffn_size=128, batch_size=32, steps=80, max_len=8))
    rate = constant_after_warmup(3e-3, 0)
    post = lab.train(lab.config(num_layers=6, norm_first=False), rate)
    pre = lab.train(lab.config(num_layers=6, norm_first=True), rate)
    assert post.final_loss() > pre.final_loss() + 0.3


def test_same_seed_same_run():
    lab = Lab(TINY)
    first, second = (lab.train(lab.config(), constant_after_warmup(1e-3, 2)).losses for _ in range(2))
    assert first == second


def test_stochastic_depth_skips_layers_only_in_training():
    layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(50))
    torch.manual_seed(0)
    kept = len(layers_to_run(layers, 0.5, training=True))
    assert 10 < kept < 40
    assert len(layers_to_run(layers, 0.5, training=False)) == 50
    assert len(layers_to_run(layers, 0.0, training=True)) == 50


def test_gated_ffn_at_equal_parameter_count():
    lab = Lab(TINY)
    plain = lab.model(lab.config("gpt", ffn_size=96))
    gated = lab.model(lab.config("gpt", ffn_size=64, ffn_gate=True))
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if ".ffn." in n)
    assert abs(count(gated) - count(plain)) / count(plain) < 0.02
    assert gated.decoder.layers[0].ffn.gate is not None and plain.decoder.layers[0].ffn.gate is None


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_smaller_above():
    logits, targets = torch.randn(20, 7), torch.randint(0, 7, (20,))
    ce = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.allclose(focal(0.0)(logits, targets), ce)
    assert focal(2.0)(logits, targets) < ce


def test_calibration_error():
    confidence = torch.tensor([0.95, 0.95, 0.55, 0.55])
    assert calibration_error(confidence, torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(
        0.5 * 0.05 + 0.5 * 0.05
    )
    assert calibration_error(torch.tensor([0.95]), torch.tensor([0.0])) == pytest.approx(0.95)


def test_experiment_names():
    assert chosen("all") == list(EXPERIMENTS) and chosen("none") == []
    assert chosen("scaling, residual,scaling") == ["scaling", "residual"]
    with pytest.raises(UserError, match="--experiments takes all, none or names from residual"):
        chosen("residuals")


def test_help_names_every_experiment():
    from utils.runtime.config import RunConfig

    help_text = RunConfig.__dataclass_fields__["experiments"].metadata["help"]
    assert ", ".join(EXPERIMENTS) in help_text


def test_version_analysis_runs_the_chosen_experiments_from_the_cli(tmp_path):
    """End to end: the catalogue run, then the experiment, its finding first in report.md; a misspelt
    name is one line and exit 2 before anything is written."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cli = [
        sys.executable,
        "main.py",
        "--version",
        "analysis",
        "--train_size",
        "200",
        "--epochs",
        "1",
        "--quiet",
    ]
    done = subprocess.run(
        [*cli, "--experiments", "scaling", "--output_dir", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "results_analysis"
    report = json.loads((out / "analysis_report.json").read_text(encoding="utf-8"))
    assert list(report["experiments"]) == ["scaling"] and "attention_patterns" in report
    assert (out / "experiments" / "scaling.png").read_bytes()[:8] == PNG
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# The paper lab")
    bad = subprocess.run(
        [*cli, "--experiments", "scalng", "--output_dir", str(tmp_path / "bad")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "scalng" in bad.stderr
    assert not (tmp_path / "bad").exists()
