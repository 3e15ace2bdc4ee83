"""The `bigbatch` command: exit codes, one-line errors, show/recipes/models, the quick start, signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
BIGBATCH = [sys.executable, "-m", "bigbatch.cluster.cli"]


def bigbatch(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*BIGBATCH, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=240, **kw)


def test_bad_recipe_exits_2_with_one_line_and_no_traceback(write, tiny):
    bad = write("bad.yaml", "base: tiny.yaml\noptim: {momentun: 0.9}\n")
    proc = bigbatch("train", bad, "--out", bad.parent / "run")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{bad}: optim.momentun: unknown key (did you mean 'momentum'?)" in proc.stderr
    assert not (bad.parent / "run").exists()


def test_argument_errors_are_one_line_exit_2(cli, tiny):
    code, _, err = cli("train")
    assert code == 2 and err.count("\n") == 1
    code, _, err = cli("train", tiny.parent / "missing.yaml")
    assert code == 2 and "missing.yaml: recipe file not found" in err


def test_show_prints_resolved_recipe_and_derived_values(cli, tiny):
    code, out, _ = cli("show", tiny, "--set", "cluster.backend=torch", "--set", "cluster.workers=4", "--set",
                        "train.accumulation_steps=2")
    assert code == 0
    shown = yaml.safe_load(out)
    d = shown["derived"]
    assert shown["cluster"]["workers"] == 4 and shown["train"]["precision"] == "fp32"
    assert d["world_size"] == 4 and d["global_batch"] == 4 * 32 * 2
    assert d["scaled_lr"] == pytest.approx(0.2 * 256 / 256)
    assert d["steps_per_epoch"] == d["train_examples"] // 256
    assert d["warmup_steps"] == round(0.5 * d["steps_per_epoch"])
    assert d["total_steps"] == 2 * d["steps_per_epoch"]
    # the share of the training set an epoch trains on: all but the remainder of one global batch
    assert d["epoch_coverage"] == pytest.approx(d["steps_per_epoch"] * 256 / d["train_examples"], abs=1e-6)


def test_show_says_how_to_repack_a_format_1_shard_directory(cli, tiny, tmp_path):
    import json

    from bigbatch.trainer.data.shards import pack_folder
    from tests.images import write_jpeg_folder

    folder = write_jpeg_folder(tmp_path / "folder", classes=2, per_class=4, val_per_class=2)
    pack_folder(folder, tmp_path / "packed", shard_size_bytes=20_000)
    recipe = ["--set", "data.name=shards", "--set", f"data.root={tmp_path / 'packed'}", "--set", "data.batch_size=2",
              "--set", "cluster.backend=torch", "--set", "cluster.workers=2", "--set", "data.image_size=32"]
    code, _, err = cli("show", tiny, *recipe)
    assert code == 0 and "format-1" not in err
    index = json.loads((tmp_path / "packed" / "index.json").read_text())
    index["version"] = 1
    for entry in index["splits"].values():
        for shard in entry["shards"]:
            del shard["offsets"]
    (tmp_path / "packed" / "index.json").write_text(json.dumps(index))
    code, _, err = cli("show", tiny, *recipe)
    lines = [line for line in err.splitlines() if "format-1" in line]
    assert code == 0 and len(lines) == 1
    assert f"bigbatch data pack SOURCE_FOLDER {tmp_path / 'packed'}" in lines[0]


def test_recipes_and_models_and_keys(cli):
    code, out, _ = cli("recipes", REPO / "recipes")
    assert code == 0 and "quickstart.yaml" in out and "digits" in out
    code, out, _ = cli("models")
    assert code == 0 and "resnet_small" in out
    code, out, _ = cli("keys")
    assert code == 0 and "| `optim.base_lr` | required |" in out and "`train.max_steps`" in out
    assert out.strip() in (REPO / "docs" / "recipe-keys.md").read_text(), \
        "docs/recipe-keys.md's key table is stale: paste `bigbatch keys`"


def test_models_speed_measures_the_named_entries_and_bad_arguments_exit_2(cli):
    code, out, err = cli("models", "--speed", "--device", "cpu", "--batch", "2", "shufflenet_v2_x0_5",
                         "mobilenet_v3_small")
    assert code == 0, err
    assert "inference at batch 2 on cpu" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("shufflenet", "mobilenet"))}
    assert set(rows) == {"shufflenet_v2_x0_5", "mobilenet_v3_small"}  # only the named ones
    assert all(float(row[5]) > 0 for row in rows.values())  # the img/s column, after params, MACs and px
    code, _, err = cli("models", "--speed", "no_such_net")
    assert code == 2 and err.strip().count("\n") == 0 and "no catalogue entry no_such_net" in err
    code, _, err = cli("models", "--speed", "--batch", "0", "shufflenet_v2_x0_5")
    assert code == 2 and "--batch: expected a positive number of images" in err


def test_rerunning_the_same_command_continues_and_another_recipe_needs_resume(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny, "--out", out, "--set", "train.max_steps=2")[0] == 0
    (out / "checkpoints" / "step_00000002.pt").rename(out / "checkpoints" / "step_00000001.pt")
    (out / "checkpoints" / "step_00000002.pt.sha256").rename(out / "checkpoints" / "step_00000001.pt.sha256")
    code, stdout, err = cli("train", tiny, "--out", out, "--set", "train.max_steps=2")
    assert code == 0 and "continuing it" in err and "at step 2" in stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "finish" and any(r.get("resumed_from") for r in records)
    code, _, err = cli("train", tiny, "--out", out, "--set", "train.max_steps=3")
    assert code == 2 and "different recipe" in err and "--resume auto" in err
    code, stdout, _ = cli("train", tiny, "--out", out, "--set", "train.max_steps=4", "--resume", "auto")
    assert code == 0 and "at step 4" in stdout


def test_training_failure_exits_1(cli, tiny, tmp_path):
    code, _, err = cli("train", tiny, "--out", tmp_path / "nf", "--set", "optim.base_lr=1e30",
                       "--set", "optim.warmup_epochs=0")
    assert code == 1 and "non-finite loss at step" in err and err.count("\n") == 1


# Ray's and Ray Train's own lines that a default run must not show (issue 17), and --verbose must
RAY_CHATTER = ("Failed to query Ray Train Controller", "TrainingReport(", "Checkpoint successfully created",
               "Setting up process group", "Token authentication is enabled", "(RayTrainWorker pid=",
               "(TrainController pid=", "Started a local Ray instance")


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_quickstart_in_a_terminal_one_moving_bar_no_repeats_no_ray_chatter_and_95_percent(quickstart_in_terminal):
    run = quickstart_in_terminal
    out, screen, positions = run.out, run.screen, run.positions
    assert run.code == 0, screen
    # the bar moved: several distinct step counts, never backwards, up to the end
    assert len(set(positions)) >= 3 and positions == sorted(positions) and max(positions) == 330, positions
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    repeated = {line for line in lines if lines.count(line) > 1}
    assert not repeated, repeated
    assert not [line for line in lines if any(chatter in line for chatter in RAY_CHATTER)], screen
    evals = [line for line in lines if line.startswith("epoch ")]
    assert len(evals) == 15 and evals[-1].startswith("epoch 15.00 step 330: top1 ")
    assert lines[0].startswith("bigbatch: starting 2 torch.distributed workers on Ray on this machine")
    assert lines[-1].startswith(f"bigbatch: finished {out} at step 330: top1 ")

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "top1" in r and "event" not in r]
    steps = [r for r in records if "loss" in r]
    assert evals[-1]["top1"] >= 0.95 and 0 <= evals[-1]["top5"] <= 1
    assert all(k in steps[0] for k in ("step", "loss", "lr", "images_per_s"))
    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["name"] == "resnet_small"
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    assert ckpts and (out / "checkpoints" / "best.pt").exists()
    last = torch.load(ckpts[-1], weights_only=True)
    assert last["step"] == records[-1]["step"] and "model" in last


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_then_resume_finishes(tiny, tmp_path):
    out = tmp_path / "sig"
    args = [*BIGBATCH, "train", str(tiny), "--out", str(out), "--set", "train.epochs=400",
            "--set", "train.eval_every_epochs=0", "--set", "train.log_every_steps=1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and (not metrics.exists() or metrics.read_text().count('"loss"') < 3):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint written to" in err and "--resume auto" in err
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 1
    stopped_at = torch.load(ckpts[0], weights_only=True)["step"]
    assert stopped_at >= 3
    proc = bigbatch("train", tiny, "--out", out, "--resume", "auto", "--set", f"train.max_steps={stopped_at + 5}",
                    "--set", "train.epochs=400", "--set", "train.eval_every_epochs=0")
    assert proc.returncode == 0, proc.stderr
    assert f"at step {stopped_at + 5}" in proc.stdout
    assert os.path.exists(out / "checkpoints" / f"step_{stopped_at + 5:08d}.pt")


def test_an_unreachable_cluster_address_is_a_one_line_error_not_a_hang(cli, tiny, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        started = time.time()
        code, _, err = cli("train", tiny, "--out", tmp_path / "run", "--set", "cluster.backend=torch",
                           "--set", "cluster.workers=2", "--set", f"cluster.address=127.0.0.1:{port}",
                           "--set", "cluster.connect_timeout_s=2")
    assert code == 2 and time.time() - started < 30
    assert err.count("\n") == 1 and f"cluster.address: cannot reach 127.0.0.1:{port}" in err


@pytest.mark.parametrize("recipe", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")
                                          if not p.name.startswith("_")))
def test_every_shipped_recipe_resolves(cli, recipe):
    code, out, err = cli("show", REPO / recipe)
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert isinstance(shown["deviations"], list)  # where a paper's recipe departs from it, printed by show
    if recipe.startswith("recipes/imagenet/") and "shufflenet" not in recipe:
        assert shown["deviations"] and all(isinstance(d, str) and d for d in shown["deviations"])
    derived = shown["derived"]
    assert derived["global_batch"] == derived["world_size"] * derived["per_worker_batch"] * derived[
        "accumulation_steps"]


@pytest.mark.parametrize("data", ["folder", "shards"])
def test_show_plans_an_imagenet_run_on_1024_gpus_that_may_lose_a_node(cli, data):
    """Issue 30's acceptance: 1,024 x 32 = 32,768 = 2^15, which 1,016 workers share unevenly (32 or 33 each);
    the data lives on the cluster, so the plan uses the recipe's declared size."""
    code, out, err = cli("show", REPO / "recipes" / "imagenet" / "goyal_resnet50_8k.yaml", "--set",
                         f"data.name={data}", "--set", "cluster.workers=1024", "--set", "data.batch_size=32",
                         "--set", "cluster.min_workers=1016")
    assert code == 0, err
    assert "is not on this machine; derived values use data.train_examples = 1281167" in err
    ends = {row["world_size"]: row for row in yaml.safe_load(out)["elastic"]}
    assert sorted(ends) == [1016, 1024]  # the two ends of the range, not 9 rows
    assert ends[1016]["examples_per_worker"] == "32-33" and ends[1016]["global_batch"] == 32_768
    assert ends[1024]["examples_per_worker"] == 32


def test_horovod_with_a_fraction_of_a_gpu_per_worker_is_refused(cli, tiny, tmp_path):
    code, _, err = cli("train", tiny, "--out", tmp_path / "run", "--set", "cluster.backend=horovod",
                       "--set", "cluster.workers=2", "--set", "cluster.gpus_per_worker=0.5")
    assert code == 2 and err.count("\n") == 1
    assert "cluster.gpus_per_worker: Horovod gives each worker whole GPUs" in err and "got 0.5" in err
