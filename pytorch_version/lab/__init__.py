"""The paper lab: small, seeded, controlled experiments, one per component of the paper.

`python main.py --version analysis` runs them all after its figure-catalogue run
(`--experiments residual,scaling` chooses). Each trains the bench's tiny model (bench.py) once per
setting, on the same batches from the same seed, and writes one figure to
`results_analysis/experiments/NAME.png`, its numbers into analysis_report.json ("experiments") and
its finding into report.md. Every sentence of a finding is made from the numbers of that run.

    residual          Add & Norm's residual on and off: gradient per layer, loss     structure.py
    normalization     post-LN and pre-LN, with and without warm-up; LayerNorm's effect
    initialization    Xavier, He, N(0, 0.02)
    stochastic_depth  layer drop on and off
    scaling           1/sqrt(d_k): softmax entropy and saturation against d_k        signals.py
    positions         the sinusoidal table; rotary, learned and sinusoidal in a GPT
    embeddings        token-embedding norms and similarities, specials and the rest
    ffn               ReLU, GELU and gated FFNs at equal parameter count             training.py
    schedules         Noam at three warm-ups, linear, cosine, one-cycle, cyclic
    label_smoothing   0 and 0.1: accuracy, confidence, calibration (ECE)
    focal_loss        the focal loss's weights and a model trained with it
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from pytorch_version.lab import signals, structure, training
from pytorch_version.lab.bench import Bench, Lab, Result, rounded
from utils.figures.lab_figures import draw
from utils.runtime.errors import UserError
from utils.runtime.resilience import atomic_write_json

logger = logging.getLogger(__name__)

EXPERIMENTS: dict[str, Callable[[Lab], Result]] = {
    "residual": structure.residual_connections,
    "normalization": structure.normalisation,
    "initialization": structure.initialisation,
    "stochastic_depth": structure.stochastic_depth,
    "scaling": signals.attention_scaling,
    "positions": signals.positions,
    "embeddings": signals.embeddings,
    "ffn": training.ffn_variants,
    "schedules": training.learning_rate_schedules,
    "label_smoothing": training.label_smoothing,
    "focal_loss": training.focal_loss,
}


def chosen(spec: str) -> list[str]:
    """--experiments: "all", "none", or names separated by commas, in the order given."""
    if spec.strip() == "all":
        return list(EXPERIMENTS)
    if spec.strip() == "none":
        return []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise UserError(
            f"--experiments takes all, none or names from {', '.join(EXPERIMENTS)}; "
            f"got {', '.join(unknown) or repr(spec)}"
        )
    return list(dict.fromkeys(names))


def run_experiments(names: list[str], out: Path, bench: Bench | None = None) -> dict[str, dict]:
    """Run the named experiments on one bench; write their figures, analysis_report.json's
    "experiments" section and report.md's first part under `out`. Returns the section."""
    lab = Lab(bench or Bench())
    section = {}
    for name in names:
        start = time.perf_counter()
        result = EXPERIMENTS[name](lab)
        figure = draw(out / "experiments" / f"{name}.png", result.title, result.panels)
        section[name] = {
            "title": result.title,
            "checks": result.checks,
            "shows": result.shows,
            "finding": result.finding,
            "numbers": rounded(result.numbers),
            "figure": figure.relative_to(out).as_posix(),
            "seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("experiment %s (%.1f s): %s", name, section[name]["seconds"], result.finding)
    if names:
        record(out, section, lab.bench)
    return section


def record(out: Path, section: dict, bench: Bench) -> None:
    """Add the experiments to analysis_report.json and put them first in report.md."""
    report_path = out / "analysis_report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    report["experiments"] = section
    report["experiment_bench"] = bench.__dict__
    atomic_write_json(report_path, report)
    lines = [
        "# The paper lab",
        "",
        f"Each experiment trains the same tiny model ({bench.hidden_size} wide, on {bench.task}, "
        f"{bench.steps} steps of {bench.batch_size} examples, seed {bench.seed}) once per setting; "
        "every number below was measured in this run.",
        "",
    ]
    for name, entry in section.items():
        lines += [
            f"## {entry['title']}",
            "",
            f"![{name}]({entry['figure']})",
            "",
            f"**Shows:** {entry['shows']}.",
            "",
            f"**Checks:** {entry['checks']}.",
            "",
            f"**Measured:** {entry['finding']}",
            "",
        ]
    catalogue = out / "report.md"
    rest = catalogue.read_text(encoding="utf-8") if catalogue.exists() else ""
    rest = rest.split("\n# Figures\n", 1)[-1] if rest.startswith("# The paper lab") else rest
    rest = "\n".join(_without_experiment_entries(rest.splitlines()))
    catalogue.write_text("\n".join(lines) + ("\n" + rest if rest.strip() else ""), encoding="utf-8")


def _without_experiment_entries(lines: list[str]) -> list[str]:
    """The figure catalogue without its entries for experiments/*.png (they have their own section)."""
    kept, skipping = [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.startswith("## experiments/")
        if not skipping:
            kept.append(line)
    return kept
