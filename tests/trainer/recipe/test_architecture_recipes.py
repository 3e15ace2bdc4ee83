"""Architectures given as data in a recipe train end to end on small data."""

from pathlib import Path

import torch
import yaml

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.models.darts import parse_genotype
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def train_briefly(recipe_file: Path, run_dir: Path, steps: int) -> list[dict]:
    recipe = load_recipe(recipe_file, [f"train.max_steps={steps}", "train.log_every_steps=1",
                                       "train.eval_every_epochs=0"])
    Trainer(recipe, run_dir, LocalCollective()).fit()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(yaml.safe_load, lines) if "loss" in r]


def test_the_darts_recipe_trains_the_published_v2_cells_from_data(tmp_path):
    recipe = yaml.safe_load((RECIPES / "digits_darts.yaml").read_text())
    assert parse_genotype(recipe["model"]["kwargs"]["genotype"], "recipe") == parse_genotype("darts_v2", "name")
    steps = train_briefly(RECIPES / "digits_darts.yaml", tmp_path / "darts", 12)
    assert len(steps) == 12 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    assert sum(s["loss"] for s in steps[-3:]) < sum(s["loss"] for s in steps[:3])  # it learns
    assert (tmp_path / "darts" / "checkpoints" / "step_00000012.pt").is_file()


def test_the_block_string_recipe_trains_a_network_written_as_data(tmp_path):
    from bigbatch.trainer.models import create_model

    recipe = yaml.safe_load((RECIPES / "digits_blocks.yaml").read_text())
    model = create_model("blocks", 10, 1, 8, **recipe["model"]["kwargs"])
    expansions = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(expansions) == 2 + 2 + 1  # the repeats the strings ask for
    steps = train_briefly(RECIPES / "digits_blocks.yaml", tmp_path / "blocks", 12)
    assert len(steps) == 12 and sum(s["loss"] for s in steps[-3:]) < sum(s["loss"] for s in steps[:3])
