"""`bigbatch show --from RUN_DIR` and `bigbatch report`: the gradient noise scale an earlier run measured, read
against a recipe's global batch, in words; bad input is one line and exit 2."""

import yaml

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer

RECIPE = """
seed: 0
model: {name: mlp, kwargs: {hidden: 16}}
data: {name: digits, batch_size: 8}
train: {epochs: 1, max_steps: 8, accumulation_steps: 2, log_every_steps: 1, eval_every_epochs: 0,
        progress_bar: false}
optim: {name: sgd, base_lr: 0.1, reference_batch: 16, schedule: constant}
cluster: {workers: 1, backend: local}
track: {wandb: disabled, tensorboard: false}
"""


def test_show_from_an_earlier_run_and_the_report_give_the_advice(cli, write, tmp_path, capsys):
    path = write("small.yaml", RECIPE)
    run = tmp_path / "small"
    summary = Trainer(load_recipe(path, []), run, LocalCollective()).fit()
    measured = summary["gradient_noise_scale"]["end"]["value"]
    big = 128 * 8  # far above the noise scale 8 steps of a digits MLP measure (tens)
    assert measured < big / 2
    capsys.readouterr()  # the run's own lines
    code, out, err = cli("show", path, "--set", "train.accumulation_steps=128", "--from", run)
    assert code == 0, err
    shown = yaml.safe_load(out)["gradient_noise_scale"]
    assert shown["from"] == str(run) and shown["global_batch"] == big and shown["verdict"] == "far above"
    assert shown["end"]["value"] == measured and f"The global batch {big} is" in shown["advice"]

    code, out, err = cli("report", run)
    assert code == 0, err
    report = (run / "report" / "report.md").read_text()
    assert "- batch size: gradient noise scale B_simple: start" in report and "The global batch 16 is" in report


def test_show_from_a_run_that_measured_nothing_is_one_line_and_exit_2(cli, write, tmp_path, capsys):
    path = write("one.yaml", RECIPE.replace("accumulation_steps: 2", "accumulation_steps: 1"))
    Trainer(load_recipe(path, []), tmp_path / "one", LocalCollective()).fit()
    capsys.readouterr()
    code, out, err = cli("show", path, "--from", tmp_path / "one")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "one: --from: no gradient noise scale" in err
    code, out, err = cli("show", path, "--from", tmp_path / "missing")
    assert code == 2 and "missing: run directory not found" in err
