"""An elastic group on real Ray: it starts with the workers that can be placed and holds the global batch."""

import json

import pytest

from cluster.launch import launch
from trainer.recipe import load_recipe

ELASTIC = """
seed: 0
model: {name: mlp}
data: {name: digits, batch_size: 16}
train: {epochs: 1, log_every_steps: 2, eval_every_epochs: 0, progress_bar: false, max_steps: 6, threads: 1}
optim: {name: sgd, base_lr: 0.4, warmup_epochs: 0}
cluster: {workers: 3, min_workers: 2, backend: torch, start_timeout_s: 60}
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_elastic_group_on_two_cpus_starts_with_two_of_three_workers_and_keeps_the_global_batch(
        ray_cluster, write, tmp_path):
    summary = launch(load_recipe(write("elastic.yaml", ELASTIC)), tmp_path / "run")  # Ray has 2 CPUs: 2 fit
    assert summary["status"] == "finished" and summary["step"] == 6 and summary["world_size"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    # G = 3 x 16 = 48 on 2 workers: 24 each, as 2 micro-steps of 12 (the recipe's micro-batch is at most 16)
    assert [(r["world_size"], r["accumulation_steps"], r["global_batch"]) for r in steps] == [(2, 2, 48)] * 3
