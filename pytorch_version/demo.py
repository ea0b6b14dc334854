"""`--version analysis`: a short training run that writes the whole figure catalogue.

About 500 optimizer steps on the chosen toy task, enough for attention heads to find
their patterns (reversal's cross-attention turns anti-diagonal), with internals tracked
every 25 steps. Results go to `<output_dir>/results_analysis/`, report.md lists them.
"""

from __future__ import annotations

import dataclasses

from pytorch_version.train import train
from utils.runtime.config import RunConfig

DEMO_TRAIN_SIZE = 8000  # x 4 epochs / batch 64 = 500 steps: about half a minute on 2 cores
DEMO_EPOCHS = 4


def analysis_demo(cfg: RunConfig) -> dict:
    demo = dataclasses.replace(
        cfg,
        train_size=min(cfg.train_size, DEMO_TRAIN_SIZE),
        epochs=min(cfg.epochs, DEMO_EPOCHS),
        visualize=True,
        track_internals=True,
        track_every=min(cfg.track_every, 25),
    )
    return train(demo, results_name="results_analysis")
