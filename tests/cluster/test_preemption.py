"""A node's shutdown signals every process of a worker: the training process and its data loader workers. The run
must checkpoint within a step of the signal (not at the next log step) and resume exactly (issue 29, item 4)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bigbatch.trainer.data.source import TRACE_ENV
from tests.images import write_jpeg_folder
from tests.run_files import descendants, trace_lines

REPO = Path(__file__).resolve().parents[2]


def train(recipe: Path, run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bigbatch.cluster.cli", "train", str(recipe), "--out",
                             str(run_dir), *args], cwd=REPO, env={**os.environ, TRACE_ENV: "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigterm_to_every_process_of_a_worker_checkpoints_within_a_step_and_resumes_exactly(write, tmp_path):
    root = write_jpeg_folder(tmp_path / "data", classes=3, per_class=8, val_per_class=1, size=(48, 64))
    recipe = write("preempt.yaml", f"""
        seed: 0
        model: {{name: resnet_small, kwargs: {{widths: [8, 16, 16]}}}}
        data: {{name: folder, root: {root}, image_size: 32, batch_size: 4, loader_workers: 2}}
        train: {{epochs: 5, max_steps: 30, log_every_steps: 50, eval_every_epochs: 0, progress_bar: false}}
        optim: {{name: sgd, base_lr: 0.1, reference_batch: 4, warmup_epochs: 0}}
        cluster: {{workers: 1, backend: local}}
        """)
    reference = train(recipe, tmp_path / "straight")
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err[-2000:]

    run_dir = tmp_path / "run"
    run = train(recipe, run_dir)
    while len(trace_lines(run_dir)) < 8 and run.poll() is None:
        time.sleep(0.002)
    seen = len(trace_lines(run_dir))  # the step in progress when the signal left (one micro-batch a step)
    processes = [run.pid, *descendants(run.pid)]
    assert len(processes) >= 3, processes  # the trainer and its 2 loader workers
    for pid in processes:
        os.kill(pid, signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]  # the loader workers too
    newest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]  # epoch ends (every 6 steps) have theirs
    stopped = torch.load(newest, weights_only=True)["step"]
    assert seen <= stopped <= seen + 2  # within a step of the signal: the next log step would be 30 (the end)
    assert len(trace_lines(run_dir)) == stopped  # no micro-batch drawn past the checkpoint

    resumed = train(recipe, run_dir, "--resume", "auto")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    assert trace_lines(run_dir) == trace_lines(tmp_path / "straight")  # the same examples, in the same order
    a = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000030.pt", weights_only=True)["model"]
    b = torch.load(run_dir / "checkpoints" / "step_00000030.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
