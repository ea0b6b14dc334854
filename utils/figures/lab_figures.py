"""The paper lab's figures (pytorch_version/lab): each experiment's measurements as a row of panels.

An experiment hands over plain numbers, one `Panel` per view (curves, bars per layer, histograms, a
matrix), and `draw` lays them side by side in one PNG. Nothing here knows a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.figures.paper import heatmap, new_figure, save_figure


@dataclass
class Panel:
    """One view of an experiment.

    kind      "lines": `series` {label: (xs, ys)}; "bars": `series` {label: {category: value}}, groups
              of bars side by side; "hist": `series` {label: values}; "matrix": `matrix` as a heatmap
    log       a log scale on the value axis (gradient norms span orders of magnitude)
    """

    kind: str
    title: str
    xlabel: str = ""
    ylabel: str = ""
    series: dict = field(default_factory=dict)
    matrix: np.ndarray | None = None
    log: bool = False


def draw(path: str | Path, title: str, panels: list[Panel]) -> Path:
    """The panels left to right under one title, saved as a PNG at `path`."""
    fig, axes = new_figure(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        DRAWERS[panel.kind](ax, panel)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.log:
            ax.set_yscale("log")
        if panel.kind in ("lines", "bars", "hist") and panel.series:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def _lines(ax, panel: Panel) -> None:
    for label, (xs, ys) in panel.series.items():
        ax.plot(xs, ys, label=label, linewidth=1.2)


def _bars(ax, panel: Panel) -> None:
    groups = list(panel.series)
    categories = list(dict.fromkeys(c for values in panel.series.values() for c in values))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(categories))
    floor = 1e-12 if panel.log else 0.0  # a zero has no place on a log axis: drawn at the floor
    for i, label in enumerate(groups):
        values = [max(panel.series[label].get(c, 0.0), floor) for c in categories]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label)
    ax.set_xticks(x, categories, rotation=60 if len(categories) > 6 else 0, fontsize=8)


def _hist(ax, panel: Panel) -> None:
    for label, values in panel.series.items():
        ax.hist(np.asarray(values, dtype=float).ravel(), bins=60, alpha=0.55, density=True, label=label)


def _matrix(ax, panel: Panel) -> None:
    heatmap(ax, panel.matrix, annotate=False, cmap="RdBu_r", center=0, xticklabels=8, yticklabels=8)


DRAWERS = {"lines": _lines, "bars": _bars, "hist": _hist, "matrix": _matrix}
