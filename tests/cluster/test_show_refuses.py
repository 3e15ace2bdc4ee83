"""`bigbatch show RECIPE` refuses exactly what `bigbatch train RECIPE` refuses (issue 28, item 6): the same one
line naming the file, the key and what was expected, exit code 2; `train` refuses before it starts Ray."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIGBATCH = [sys.executable, "-m", "bigbatch.cluster.cli"]

# (what, the recipe file's text after `base: tiny.yaml`, the key, the message after "FILE: KEY: ")
REFUSED = [
    ("several workers on the local backend", "cluster: {workers: 2}", "cluster.workers",
     "the 'local' backend runs exactly 1 worker, got 2"),
    ("a fraction of a GPU per Horovod worker", "cluster: {backend: horovod, workers: 2, gpus_per_worker: 0.5}",
     "cluster.gpus_per_worker", "Horovod gives each worker whole GPUs (NCCL cannot share one between ranks); "
     "got 0.5, expected 0, 1, 2, ..."),
    ("a cluster address without a port", "cluster: {backend: torch, workers: 2, address: headnode}",
     "cluster.address", "expected HOST:PORT or SCHEME://HOST:PORT, got 'headnode'"),
    ("a non-finite learning rate", "optim: {base_lr: .nan}", "optim.base_lr", "expected a finite number, got nan"),
]


def both(*commands: list) -> list[subprocess.CompletedProcess]:
    """Each command in its own `bigbatch` process, all at once (each spends its ~1.5 s importing)."""
    started = [subprocess.Popen([*BIGBATCH, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO) for args in commands]
    done = []
    for proc in started:
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.parametrize("case,text,key,expected", REFUSED, ids=[r[0] for r in REFUSED])
def test_show_and_train_print_the_same_one_line_and_exit_2(write, tiny, tmp_path, case, text, key, expected):
    recipe = write("bad.yaml", f"base: tiny.yaml\n{text}\n")
    line = f"bigbatch: error: {recipe}: {key}: {expected}\n"
    show, train = both(["show", recipe], ["train", recipe, "--out", tmp_path / "run"])
    for proc in (show, train):
        assert (proc.returncode, proc.stderr, proc.stdout) == (2, line, ""), proc.stderr
    assert not (tmp_path / "run").exists()  # refused before a run directory or Ray


def test_a_non_finite_override_is_refused_by_both_commands_alike(tiny, tmp_path):
    line = "bigbatch: error: --set optim.momentum=-inf: optim.momentum: expected a finite number, got '-inf'\n"
    for proc in both(["show", tiny, "--set", "optim.momentum=-inf"],
                     ["train", tiny, "--out", tmp_path / "run", "--set", "optim.momentum=-inf"]):
        assert (proc.returncode, proc.stderr) == (2, line), proc.stderr
