"""bench/gpu.py on a machine without CUDA: one line saying nothing was measured, exit 0, no results file.
Its recipe resolves (the GPU path builds from it)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "gpu.txt"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--out", str(out)], cwd=REPO,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "no CUDA device" in done.stdout
    assert not out.exists()


def test_its_recipe_resolves_to_the_stated_settings(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    recipe = gpu.recipe_for(tmp_path, 256, 40, compiled=True)
    assert recipe.train.precision == "bf16" and recipe.train.channels_last and recipe.train.compile
    assert recipe.data.batch_size == 256 and recipe.data.image_size == 224 and recipe.train.max_steps == 40
    assert recipe.model.name == "torchvision:resnet50" and recipe.optim.name == "sgd"
