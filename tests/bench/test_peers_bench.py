"""bench/peers.py without running either trainer: the data set it writes, the recipe it gives bigbatch, and
what it says when torchvision's reference scripts are missing."""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_peers():
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "bench" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_folder_holds_out_images_of_the_training_split_only(tmp_path):
    import numpy as np
    from PIL import Image

    load_peers().write_fashion_folder(tmp_path, train_per_class=3, val_per_class=2)
    for split, per_class in (("train", 3), ("val", 2)):
        classes = sorted(p.name for p in (tmp_path / split).iterdir())
        assert len(classes) == 10 and all("/" not in c for c in classes)
        assert all(len(list((tmp_path / split / c).glob("*.jpg"))) == per_class for c in classes)
    names = {split: {p.name for p in (tmp_path / split).rglob("*.jpg")} for split in ("train", "val")}
    assert not names["train"] & names["val"]  # file names are indices into the training split
    with Image.open(next((tmp_path / "val").rglob("*.jpg"))) as image:
        assert image.mode == "RGB" and image.size == (28, 28)
        pixels = np.asarray(image, dtype=float)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 8  # grey stored as RGB (JPEG chroma rounding)


def test_bigbatchs_recipe_is_the_torchvision_flags(tmp_path):
    from bigbatch.trainer.recipe import load_recipe

    peers = load_peers()
    args = argparse.Namespace(crop=32, batch_size=64, epochs=2)
    path = tmp_path / "bb.yaml"
    path.write_text(peers.RECIPE % {"seed": 0, "root": tmp_path, "crop": 32, "batch": 64, "epochs": 2,
                                    "lr": peers.lr(args), "momentum": 0.9, "wd": 1e-4})
    recipe = load_recipe(path)
    assert peers.lr(args) == 0.1 * 64 / 256  # torchvision's default 0.1 at batch 256, scaled linearly
    assert recipe.model.name == "torchvision:resnet18" and recipe.cluster.backend == "local"
    assert (recipe.data.image_size, recipe.data.batch_size, recipe.data.loader_workers) == (32, 64, 1)
    assert recipe.data.resize_quality == "antialias"  # PIL's filter, as torchvision's transforms
    o = recipe.optim
    assert (o.name, o.base_lr, o.lr_scaling, o.momentum, o.weight_decay) == ("sgd", 0.025, "none", 0.9, 1e-4)
    assert o.exclude_norm_and_bias and o.warmup_epochs == 0 and o.schedule == "constant"


def test_missing_reference_scripts(tmp_path):
    bench = [sys.executable, str(REPO / "bench" / "peers.py"), "--out", str(tmp_path / "peers.txt")]
    default = subprocess.run(bench, cwd=REPO, env={**os.environ, "HOME": str(tmp_path)}, capture_output=True,
                             text=True, timeout=60)
    assert default.returncode == 0 and default.stdout.count("\n") == 1 and "skipped" in default.stdout
    given = subprocess.run([*bench, "--references", str(tmp_path / "nowhere")], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert given.returncode == 2 and given.stderr.count("\n") == 1 and "--references: no train.py" in given.stderr
    assert not (tmp_path / "peers.txt").exists()
