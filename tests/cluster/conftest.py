"""One local Ray instance for the cluster tests (started once, stopped at the end of the session)."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.terminal import Terminal

REPO = Path(__file__).resolve().parents[2]

RAY_TEST_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


@pytest.fixture(scope="session")
def ray_cluster():
    saved = {k: os.environ.get(k) for k in RAY_TEST_ENV}
    os.environ.update(RAY_TEST_ENV)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class TerminalRun:
    out: Path  # the run directory
    code: int  # exit status
    screen: str  # everything the terminal showed, history included
    positions: list[int]  # the bar's step counts, one per look while it ran


@pytest.fixture(scope="session")
def quickstart_in_terminal(tmp_path_factory) -> TerminalRun:
    """`bigbatch train recipes/quickstart.yaml` (2 Ray workers, as `make train`) in a real pseudo-terminal,
    watched while it runs; shared by the console test and the dashboard test (one run, not two). In the tests'
    Ray environment (RAY_TEST_ENV: Ray Train's controller polls every 0.2 s, so its 15 epoch-end checkpoints do
    not wait up to 2 s each), whether or not `ray_cluster` has set it in this process already."""
    out = tmp_path_factory.mktemp("runs") / "quickstart"
    terminal = Terminal([sys.executable, "-m", "bigbatch.cluster.cli", "train", "recipes/quickstart.yaml", "--out", str(out)],
                        REPO, env=RAY_TEST_ENV)
    try:
        positions = terminal.bar_positions(timeout_s=240)
        code = terminal.wait(60)
        return TerminalRun(out, code, terminal.screen(history=True), positions)
    finally:
        terminal.close()
