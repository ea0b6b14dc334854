"""`--version analysis`: the figure catalogue of a short run, then the paper lab's experiments.

First about 500 optimizer steps on the chosen toy task, enough for attention heads to find their
patterns (reversal's cross-attention turns anti-diagonal), with internals tracked every 25 steps.
Then the experiments `--experiments` names (pytorch_version/lab: all by default), each a seeded,
controlled comparison on the lab's own tiny bench. Results go to `<output_dir>/results_analysis/`:
report.md gives each experiment's measured finding, then every figure of the run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pytorch_version.lab import chosen, run_experiments
from pytorch_version.train import train
from utils.runtime.config import RunConfig
from utils.runtime.lock import results_folder_lock

DEMO_TRAIN_SIZE = 8000  # x 4 epochs / batch 64 = 500 steps: about half a minute on 2 cores
DEMO_EPOCHS = 4


def analysis_demo(cfg: RunConfig) -> dict:
    experiments = chosen(cfg.experiments)  # a misspelt name stops the run before it trains
    demo = dataclasses.replace(
        cfg,
        train_size=min(cfg.train_size, DEMO_TRAIN_SIZE),
        epochs=min(cfg.epochs, DEMO_EPOCHS),
        visualize=True,
        track_internals=True,
        track_every=min(cfg.track_every, 25),
    )
    summary = train(demo, results_name="results_analysis")
    if summary and experiments:  # under torchrun the other processes return {}: rank 0 alone experiments
        out = Path(cfg.output_dir) / "results_analysis"
        with results_folder_lock(out):
            summary["experiments"] = {
                name: entry["finding"] for name, entry in run_experiments(experiments, out).items()
            }
    return summary
