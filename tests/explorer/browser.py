"""A real browser for the explorer's tests (the `browser` fixture and what reads the page back): the
distribution's Chromium, headless, driven by selenium through the distribution's chromedriver, with
its network cut off (DevTools' offline mode, a resolver that finds no host and a proxy on a closed
loopback port), its console and its requests logged.

.ci/run installs Debian's `chromium` and `chromium-driver` when they are missing, so under CI (CI set)
a missing browser fails the tests; elsewhere they are skipped with a line saying what to install.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest


def browser_paths() -> tuple[str | None, str | None]:
    browser = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
    )
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    browser_path, driver_path = browser_paths()
    if not (browser_path and driver_path):
        message = "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1600",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (DevTools' performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def open_page(driver, path) -> None:
    """Load a page from disk and wait until its script has drawn it; the logs start empty."""
    driver.get_log("browser"), driver.get_log("performance")  # drop what an earlier page left
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")


def not_blank(png: bytes) -> bool:
    """A screenshot with drawing on it: many colours, and no single colour covering nearly all of it."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").resize((350, 400))
    colours = image.getcolors(maxcolors=350 * 400)
    return len(colours) > 50 and max(count for count, _ in colours) < 0.9 * 350 * 400
