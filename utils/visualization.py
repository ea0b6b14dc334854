"""The user guide's import path: `from utils.visualization import TransformerVisualizer`.

The visualizer lives in utils/figures/visualization.py (with the other figures); this module keeps
the guide's line working.
"""

from utils.figures.visualization import TransformerVisualizer

__all__ = ["TransformerVisualizer"]
