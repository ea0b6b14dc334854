"""What the console shows: progress bars only where someone watches them.

A progress bar redraws itself with carriage returns. On a terminal that is one changing line; in a
redirected console (a log file, CI output) every redraw stays, and a default run wrote a log of
hundreds of kilobytes, nearly all of it bar updates. Both versions ask `progress_bars` whether to draw
theirs; with bars off they still log one line per epoch.
"""

from __future__ import annotations

import sys


def progress_bars(quiet: bool) -> bool:
    """True when bars should be drawn: not --quiet, and stderr (where tqdm draws) is a terminal."""
    if quiet:
        return False
    stream = sys.stderr  # looked up at each call: tests and callers may replace it
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream: nobody is watching
        return False


def hide_loading_bars() -> None:
    """No "Loading weights" progress bars from transformers: the console is for the run's own story."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
