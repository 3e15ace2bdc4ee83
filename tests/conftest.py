"""Shared test helpers: write recipe files, run the CLI in-process."""

import os
import textwrap
from pathlib import Path

# Runs made by tests do not open wandb runs unless a test asks for one in its recipe (track.wandb: offline);
# set before any Ray worker or subprocess starts, so they inherit it.
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest

from bigbatch.cluster.cli import main

TINY = """
description: tiny test recipe
seed: 0
model: {name: resnet_small, kwargs: {widths: [8, 16, 16]}}
data: {name: digits, batch_size: 32}
train: {epochs: 2, log_every_steps: 2, progress_bar: false}
optim: {name: sgd, base_lr: 0.2, reference_batch: 256, warmup_epochs: 0.5}
cluster: {workers: 1, backend: local}
"""


@pytest.fixture
def write(tmp_path: Path):
    """write("name.yaml", "yaml text") -> path, dedented."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture
def tiny(write) -> Path:
    return write("tiny.yaml", TINY)


@pytest.fixture
def cli(capsys):
    """cli("show", path, ...) -> (exit code, stdout, stderr)."""

    def _run(*args) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
