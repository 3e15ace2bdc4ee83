"""`bigbatch dashboard` on a finished quickstart run, opened in a real browser (Debian's headless Chromium).

The screenshot is kept as a test artifact in .artifacts/dashboard.png (docs/dashboard.png, the picture in
docs/tracking.md, is a copy of it)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bigbatch.cluster.local_cluster import free_ports

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts"
CHROMIUM = shutil.which("chromium")
# Debian's Chromium as root, headless, with nothing that reaches for the network (this machine has none)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=20000"]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(quickstart_in_terminal):
    """The dashboard over the directory holding the quickstart run; its URL."""
    assert quickstart_in_terminal.code == 0
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "bigbatch.cluster.cli", "dashboard", str(quickstart_in_terminal.out.parent),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("bigbatch: dashboard of the runs under") and f"http://127.0.0.1:{port}/" in line, \
            line + proc.stderr.read()
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the dashboard's own process group, started here
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(330)
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (make test-tools installs Debian's chromium)")
def test_the_dashboard_shows_the_quickstart_runs_curves_in_a_browser(dashboard, quickstart_in_terminal, tmp_path):
    run = f"{quickstart_in_terminal.out.name}/tensorboard"
    deadline = time.monotonic() + 60
    while run not in get_json(f"{dashboard}/data/runs") and time.monotonic() < deadline:
        time.sleep(0.5)  # the first scan of the directory
    tags = get_json(f"{dashboard}/data/plugin/scalars/tags")[run]
    assert {"train/loss", "train/lr", "train/images_per_s", "eval/top1", "eval/val_loss"} <= set(tags)
    assert {"workers/worker_step_s/rank_0", "workers/worker_step_s/rank_1"} <= set(tags)
    loss = get_json(f"{dashboard}/data/plugin/scalars/scalars?run={run}&tag=train/loss")
    steps = [step for _, step, _ in loss]
    assert steps == sorted(set(steps)) and steps[-1] == 330  # one point per logged step, to the end
    top1 = get_json(f"{dashboard}/data/plugin/scalars/scalars?run={run}&tag=eval/top1")
    assert len(top1) == 15 and top1[-1][2] >= 0.95

    # the Time Series page renders in the light DOM (the Scalars page hides its text in shadow roots), and the
    # Scalars page draws its curves without WebGL (which headless Chromium without a GPU lacks)
    profile = tmp_path / "chromium-profile"
    for _ in range(3):  # on a busy machine the page can outlast Chromium's virtual time budget: look again
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                              f"{dashboard}/?darkMode=false&tagFilter=loss#timeseries"],
                             capture_output=True, text=True, timeout=120).stdout
        if run in dom and "train/loss" in dom and "eval/val_loss" in dom:
            break
    assert run in dom and "train/loss" in dom and "eval/val_loss" in dom  # the page lists the run's loss cards
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}",
                    f"{dashboard}/?darkMode=false#scalars&tagFilter=loss"], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1400, 1000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # a drawn page, not a blank one
