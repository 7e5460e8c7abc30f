"""``report.html`` rendered by a real browser: headless Chromium (Debian package
``chromium``; ``.ci/run`` installs it).

Method (chosen to be robust across Chromium versions; no WebDriver, no JS in the page):

* ``--screenshot`` of a 1200x900 window: the image is not blank, and it shows the front's
  red markers, so the figure embedded as a base64 data URI was decoded and drawn;
* ``--enable-logging=stderr --v=0``: Chromium logs every console message of the page as
  ``...:CONSOLE:<line>] "<message>", source: ...``; the report has no script, so any such
  line (a blocked resource, a CSP or parse complaint) is a failure.  A control page that
  calls ``console.error`` proves the check sees messages in this Chromium;
* ``--dump-dom``: the DOM the browser built holds the front table with a link per front
  arch, and the anchors those links point to.

Each Chromium run is bounded by a timeout and gets its own profile folder.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nas.report import arch_id, write_report
from nas.search import run_search
from tests.nas.test_report import nb201_recipe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                                          "(apt-get install -y chromium)")]
#: generous: a cold start on a loaded 2-core machine takes seconds, a hang must not stall CI
TIMEOUT_S = 120
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


def chromium(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           f"--user-data-dir={profile}", "--window-size=1200,900", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=True)


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := CONSOLE.search(line))]


def test_console_check_sees_a_page_error(tmp_path):
    """The control: the console check below would catch a message."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom-42")</script></body></html>')
    run = chromium(page, tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / 'bad.png'}")
    assert any("boom-42" in m for m in console_messages(run.stderr)), run.stderr[-2000:]


def test_report_renders_in_chromium(tmp_path):
    import matplotlib.image

    result = run_search(nb201_recipe(tmp_path, trials=6), progress=False)
    html_path, _ = write_report(result.run_dir)
    shot = tmp_path / "shot.png"
    run = chromium(html_path, tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}")
    assert console_messages(run.stderr) == []
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.01
    # the front's markers (matplotlib's tab:red, #d62728) are on screen: the embedded figure was drawn
    red = np.abs(pixels - np.array([0xD6, 0x27, 0x28]) / 255).max(axis=-1) < 0.08
    assert red.sum() > 20

    dom = chromium(html_path, tmp_path, "--dump-dom").stdout
    assert "<table" in dom and result.front
    for row in result.front:
        short = arch_id(row["arch"])
        assert f'href="#arch-{short}"' in dom and f'id="arch-{short}"' in dom
