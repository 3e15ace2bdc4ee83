"""Failures a multi-worker run must survive or report: a killed worker, a signalled driver, no resources."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bigbatch.cluster.launch import launch
from bigbatch.trainer.data.source import TRACE_ENV
from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.recipe import load_recipe
from tests.cluster.conftest import RAY_TEST_ENV
from tests.images import write_jpeg_folder
from tests.run_files import descendants, launch_and_kill_rank_1, records, trace_lines, wait_for_step

REPO = Path(__file__).resolve().parents[2]
TWO_WORKERS = ["cluster.backend=torch", "cluster.workers=2", "bn.sync=all", "train.eval_every_epochs=0",
               "train.log_every_steps=1"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_last_checkpoint_and_wandb_run(ray_cluster, tiny, tmp_path):
    run_dir = tmp_path / "run"
    recipe = load_recipe(tiny, [*TWO_WORKERS, "train.max_steps=18", "train.checkpoint_every_steps=3",
                                "cluster.max_failures=1", "track.wandb=offline", "track.project=bigbatch-tests"])
    summary, victim = launch_and_kill_rank_1(recipe, run_dir, at_step=7, timeout_s=150)
    assert summary["step"] == 18 and summary["status"] == "finished"
    starts = [r for r in records(run_dir) if r.get("event") == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"]  # the restarted group resumed, not from scratch
    assert 3 <= starts[1]["step"] <= 18 and starts[1]["run_id"] == starts[0]["run_id"]
    # the restarted rank 0 continued the same wandb run: a second offline segment under the same run id
    segments = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [p.name for p in segments] == [f"run-{starts[0]['run_id']}.wandb"] * 2
    restarted = json.loads((run_dir / "workers" / "rank_1.json").read_text())
    assert restarted["pid"] != victim
    final = torch.load(run_dir / "checkpoints" / "step_00000018.pt", weights_only=True)
    assert final["step"] == 18
    # Ray's storage (default: inside the run directory, one file system) references the run directory's
    # checkpoints instead of holding a second copy; the restarted group resumed through such a reference
    assert not list((run_dir / "ray").rglob("*.pt"))
    references = [json.loads(p.read_text())["path"] for p in (run_dir / "ray").rglob("checkpoint_ref.json")]
    assert str((run_dir / "checkpoints" / "step_00000018.pt").resolve()) in references


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_to_every_process_of_a_worker_of_an_elastic_run_leaves_within_a_step(ray_cluster, tiny, tmp_path,
                                                                                     monkeypatch):
    """In an elastic run the signalled worker leaves instead: a node's shutdown signals the worker and its data
    loader workers; every rank checkpoints at the same step, within a step of the signal (not at the next log
    step, 100 here), Ray restarts the group with the workers it can place (both CPUs are free again) and no
    step is lost."""
    monkeypatch.setenv(TRACE_ENV, "1")
    root = write_jpeg_folder(tmp_path / "data", classes=3, per_class=8, val_per_class=1, size=(48, 64))
    run_dir = tmp_path / "run"
    # a checkpoint every 2 steps: Ray holds an older reported one when the group ends right after the leave's
    recipe = load_recipe(tiny, [*TWO_WORKERS, "train.log_every_steps=100", "train.max_steps=12", "train.epochs=4",
                                "data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                                "data.loader_workers=2", "cluster.min_workers=1", "cluster.max_failures=1",
                                "cluster.restart_timeout_s=30", "train.checkpoint_every_steps=2"])
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=launch(recipe, run_dir)), daemon=True)
    thread.start()
    deadline = time.time() + 120
    while len(trace_lines(run_dir, rank=1)) < 4 and time.time() < deadline:
        time.sleep(0.002)
    seen = len(trace_lines(run_dir, rank=1))  # rank 1's step in progress (one micro-batch a step)
    victim = json.loads((run_dir / "workers" / "rank_1.json").read_text())["pid"]
    processes = [victim, *descendants(victim)]
    assert len(processes) >= 3, processes  # the worker and its 2 loader workers
    for pid in processes:
        os.kill(pid, signal.SIGTERM)
    thread.join(timeout=150)
    summary = outcome["summary"]
    assert summary["status"] == "finished" and summary["step"] == 12, summary
    events = [r for r in records(run_dir) if r.get("event")]
    assert [r["event"] for r in events] == ["start", "attempt_failed", "start", "finish"]
    left, resumed = events[1], events[2]
    assert f"signal {signal.SIGTERM} to a worker" in left["error"] and left["status"] == "restarting"
    assert seen <= left["step"] <= seen + 2  # the request crossed on the host one step late, at most
    assert resumed["step"] == left["step"]  # resumed at the step every rank checkpointed: nothing redone
    assert resumed["resumed_from"].endswith(f"step_{left['step']:08d}.pt")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_to_the_driver_checkpoints_the_workers_and_resume_continues(ray_cluster, tiny, tmp_path):
    run_dir = tmp_path / "run"
    sets = [a for s in [*TWO_WORKERS, "train.epochs=50"] for a in ("--set", s)]
    # the driver joins the tests' Ray (RAY_ADDRESS, as a submitted job's driver does) instead of starting its own
    env = {**os.environ, **RAY_TEST_ENV, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    # --verbose: Ray's own lines (hidden by default: test_cli's terminal test) reach the console too
    driver = subprocess.Popen([sys.executable, "-m", "bigbatch.cluster.cli", "train", str(tiny), "--out", str(run_dir), *sets,
                               "--verbose"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run_dir, 3, timeout_s=120)
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume auto" in err
    assert "(RayTrainWorker pid=" in out + err and "(TrainController pid=" in out + err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signal.SIGTERM
    stopped = torch.load(summary["checkpoint"], weights_only=True)
    assert stopped["step"] == summary["step"] >= 3 and stopped["world_size"] == 2
    # continue on one local process with the same global batch: the data position carries over
    summary = launch(load_recipe(tiny, ["train.epochs=50", "train.eval_every_epochs=0", "data.batch_size=64",
                                        f"train.max_steps={stopped['step'] + 2}"]), run_dir, resume="auto")
    assert summary["status"] == "finished" and summary["step"] == stopped["step"] + 2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_group_that_cannot_be_placed_fails_within_the_start_timeout(ray_cluster, tiny, tmp_path):
    # 3 one-CPU workers on the tests' 2 CPUs can never be placed: the shortest timeout the key allows
    recipe = load_recipe(tiny, ["cluster.backend=torch", "cluster.workers=3", "cluster.start_timeout_s=1"])
    started = time.time()
    with pytest.raises(TrainingFailed, match=r"3 workers .* did not start within cluster.start_timeout_s=1 s"):
        launch(recipe, tmp_path / "run")
    assert time.time() - started < 60
