"""report.html in a real browser: headless Chromium renders it with no console errors and
visible plots. Chromium comes from Debian's package, which `make test` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from gradwise.report import build_report
from tests.report.test_diagnosis_sections import make_doctored_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r"INFO:CONSOLE[^\]]*\] (.*)")


def render(page: Path, screenshot: Path) -> list[str]:
    """Open ``page`` headless, save a screenshot, return the console messages it logged."""
    assert CHROMIUM is not None, "chromium is missing: run `make test`, which installs it"
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1200,4000", f"--screenshot={screenshot}",
            "--enable-logging=stderr", "--v=0", page.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return CONSOLE.findall(result.stderr)


def drawn_fraction(screenshot: Path) -> float:
    """The fraction of pixels that are not the page's white background."""
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    return float((pixels < 245).mean())


def test_the_console_check_catches_errors_and_a_blank_page(tmp_path: Path) -> None:
    # The detector itself: a page that logs an error and draws almost nothing.
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>console.error('planted'); missing();</script></body></html>"
    )
    messages = render(page, tmp_path / "broken.png")
    assert any("planted" in m for m in messages)
    assert any("ReferenceError" in m for m in messages)
    assert drawn_fraction(tmp_path / "broken.png") < 0.001


def test_the_report_renders_without_console_errors_and_shows_its_plots(tmp_path: Path) -> None:
    report = build_report(make_doctored_run(tmp_path))
    screenshot = tmp_path / "report.png"
    assert render(report, screenshot) == []
    assert drawn_fraction(screenshot) > 0.02  # a blank page: < 0.001
    # The plots themselves decode and are not blank either.
    page = report.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 5
