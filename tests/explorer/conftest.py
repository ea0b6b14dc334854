"""The `browser` fixture of the explorer's tests (tests/explorer/browser.py)."""

from tests.explorer.browser import browser  # noqa: F401
