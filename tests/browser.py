"""A real browser for page tests: Debian's headless Chromium driven by Selenium.

Without /usr/bin/chromium and /usr/bin/chromedriver the tests that use `browser` skip locally
and fail in CI (env CI=true; .ci/run installs them), so CI never passes by skipping them.
Screenshots go to test-artifacts/ at the repository root (gitignored): `screenshot` prints the
path it wrote.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _missing() -> list[str]:
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]


@pytest.fixture
def browser():
    """A headless Chromium (Selenium WebDriver), 1400x1200, quit after the test."""
    missing = _missing()
    if missing:
        message = f"needs {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> Path:
    """Save a full-window PNG to test-artifacts/NAME.png and print where it went."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
