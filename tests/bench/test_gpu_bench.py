"""bench/gpu.py on a machine without CUDA: one line saying nothing was measured, exit 0, no results file.
Its recipe resolves (the GPU path builds from it). `--device cpu --smoke` runs every code path of the GPU
run (plain and bigbatch loops, eager and compiled, the input pipeline on real JPEGs, the Markdown results)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "gpu.md"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--out", str(out)], cwd=REPO,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "no CUDA device" in done.stdout
    assert not out.exists()


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    return gpu


def test_its_recipe_resolves_to_the_stated_settings(tmp_path):
    gpu = load_bench()
    recipe = gpu.recipe_for(tmp_path, 256, 40, compiled=True)
    assert recipe.train.precision == "bf16" and recipe.train.channels_last and recipe.train.compile
    assert recipe.data.batch_size == 256 and recipe.data.image_size == 224 and recipe.train.max_steps == 40
    assert recipe.model.name == "torchvision:resnet50" and recipe.optim.name == "sgd"
    assert recipe.train.device == "cuda" and recipe.track.wandb == "disabled"
    smoke = gpu.recipe_for(tmp_path, 8, 6, compiled=False, device="cpu", scale=gpu.SMOKE)
    assert smoke.train.device == "cpu" and smoke.model.name == "resnet_small" and smoke.data.image_size == 32


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpu_smoke_runs_every_path_and_writes_the_markdown_results(tmp_path):
    out = tmp_path / "gpu.md"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--smoke",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-4000:]
    text = out.read_text()
    assert "| plain | eager |" in done.stdout  # the table is printed too
    rows = table_rows(text)
    sides = {(row[0], row[1]): row for row in rows if row[0] in ("plain", "bigbatch")}
    assert set(sides) == {(loop, mode) for loop in ("plain", "bigbatch") for mode in ("eager", "compiled")}
    for row in sides.values():
        assert float(row[2]) > 0, row  # images/s
        assert row[4] == "n/a" and "needs CUDA" in row[5], row  # peak memory and sync counts are CUDA's
    by_name = {row[0]: row[1] for row in rows}
    pipeline = next(value for name, value in by_name.items() if name.startswith("input pipeline"))
    assert float(re.fullmatch(r"([\d.]+) images/s per core", pipeline).group(1)) > 0
    assert int(next(v for n, v in by_name.items() if n.startswith("loader workers"))) >= 1
    assert by_name["host syncs per timed bigbatch step"].startswith("n/a: sync counting needs CUDA")


def test_the_clock_counts_the_loops_host_syncs_over_the_timed_steps_only(monkeypatch):
    """The CUDA-only bookkeeping, with torch.cuda's sync debug mode and synchronize faked: every step makes
    one sync (a warning while the mode is "warn"), and so does the clock's own synchronize, which must not
    count; the untimed steps' syncs do not count either."""
    import warnings

    import torch

    gpu = load_bench()
    mode = {"now": 0}

    def sync_op():
        if mode["now"] in ("warn", 1):
            warnings.warn(f"{gpu.SYNC_WARNING} (fake)", UserWarning, stacklevel=2)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: mode.update(now=m))
    monkeypatch.setattr(torch.cuda, "synchronize", sync_op)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with gpu.CountingSyncs() as caught:
        clock = gpu.StepClock(torch.device("cuda"), warmup=2, steps=6, caught=caught)
        for step in range(6):
            sync_op()
            if step == 3:
                sync_op()  # a second sync in one timed step: 5 over the 4 timed steps
            clock(None, (), {})
        sync_op()  # after the last step (the end-of-run evaluation): not counted
    assert mode["now"] == 0 and len(clock.ends) == 6
    assert clock.syncs_per_step() == 5 / 4
    assert clock.images_per_s(8) > 0
