"""explorer.html: one self-contained page (inline script, style and data) that opens from disk.

The page is assets/explorer.html with the stylesheet, the two scripts and the data (utils.explorer.data)
written into it. Its Content-Security-Policy allows inline code and nothing else, so a browser makes
no request to any address, and a saved copy works offline wherever it is opened. In a notebook the
same page goes into an <iframe srcdoc>, which keeps its script and style apart from the notebook's.
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

from utils.explorer.data import MAX_BYTES, Example, explorer_data
from utils.runtime.resilience import atomic_write_text

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
PAGE = "explorer.html"  # in every results folder
SCRIPTS = ("explorer.js", "steps.js")  # in this order: the second uses the first's functions


def explorer_html(data: dict) -> str:
    """The page for explorer_data's `data`: one string, nothing to fetch."""
    parts = {
        "__CSS__": (ASSETS / "explorer.css").read_text(encoding="utf-8"),
        "__JS__": "\n".join((ASSETS / name).read_text(encoding="utf-8") for name in SCRIPTS),
        "__TITLE__": html.escape(data.get("title") or "Attention explorer"),
        # inside <script> a "</script>" in a token would end it: <, > and & go as \u escapes
        "__DATA__": json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    }  # fmt: skip
    template = (ASSETS / "explorer.html").read_text(encoding="utf-8")
    return re.sub("__(CSS|JS|TITLE|DATA)__", lambda m: parts[m[0]], template)


def read_json(path: Path) -> dict | None:
    """A JSON file a run wrote beside the page (internals.json, analysis_report.json), or None."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_patterns(report: dict | None) -> dict | None:
    """{attention: [{pattern, normalized_entropy}]} of an analysis report (the run's held-out batch)."""
    patterns = (report or {}).get("attention_patterns")
    if not isinstance(patterns, dict):
        return None
    return {name: [{"pattern": h.get("pattern"), "normalized_entropy": h.get("normalized_entropy")}
                   for h in heads if isinstance(h, dict)]
            for name, heads in patterns.items() if isinstance(heads, list)}  # fmt: skip


def write_explorer(model, examples: list[Example], path: Path, title: str = "", internals: dict | None = None,
                   report: dict | None = None, max_bytes: int = MAX_BYTES) -> Path:  # fmt: skip
    """explorer.html at `path` (written whole or not at all) for `examples`, with the --track_internals
    record and the analysis report when the run has them."""
    data = explorer_data(model, examples, internals, title, max_bytes)
    data["report"] = report_patterns(report)
    page = explorer_html(data)
    atomic_write_text(path, page)
    logger.info("%s written (%.0f kB%s)", path, len(page.encode()) / 1e3,
                f"; left out: {'; '.join(data['left_out'])}" if data["left_out"] else "")  # fmt: skip
    return Path(path)


def write_run_explorer(model, examples: list[Example], out: Path, title: str, recorder=None,
                       analysed: bool = False) -> Path | None:  # fmt: skip
    """The page of a results folder, from its held-out examples, the run's --track_internals `recorder`
    and, if the run `analysed` (--visualize), its analysis_report.json. A failure is logged, never
    raised: the run is saved already."""
    out = Path(out)
    internals = recorder.to_dict() if recorder is not None and recorder.attention_maps else None
    report = read_json(out / "analysis_report.json") if analysed else None
    try:
        return write_explorer(model, examples, out / PAGE, title, internals, report)
    except Exception as err:  # a drawing failure must not lose a finished run
        logger.warning("explorer.html not written: %s: %s", type(err).__name__, err, exc_info=True)
        return None


def notebook_view(data_or_page: dict | str, height: int = 900):
    """The page inside an <iframe srcdoc> for IPython.display (Jupyter, Colab): no network either."""
    from IPython.display import HTML

    page = data_or_page if isinstance(data_or_page, str) else explorer_html(data_or_page)
    frame = (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;'
             'border:1px solid #dde2ea" sandbox="allow-scripts"></iframe>')  # fmt: skip
    return HTML(frame)
