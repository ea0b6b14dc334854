"""notebooks/tutorial.ipynb runs top to bottom in a real kernel (nbclient), as CI runs it, and its
explorer cells render the page inline with nothing to fetch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a kernel and a short training run

ROOT = Path(__file__).resolve().parents[2]


def test_the_tutorial_notebook_runs_and_shows_the_explorer():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / "tutorial.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # kept clean
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # fmt: skip
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    match = re.search(r"held-out exact match ([\d.]+)%", text)
    assert match and float(match[1]) > 50, text[:2000]  # it trained, and it learned
    frames = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(frames) == 2 and all(f.startswith("<iframe srcdoc=") for f in frames)
    assert all("Content-Security-Policy" in f for f in frames)
    # the checkpoint's page has its run's training snapshots; the in-memory model's has none
    assert "&quot;evolution&quot;:{" in frames[0] and "&quot;evolution&quot;:null" in frames[1]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the visualizer's heatmap
    assert "5. Softmax over keys" in text  # the --debug trace
