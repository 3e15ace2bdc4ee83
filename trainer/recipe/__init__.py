"""Recipes: YAML files validated into typed, frozen config objects."""

from bigbatch.trainer.recipe.load import load_recipe
from bigbatch.trainer.recipe.schema import Recipe

__all__ = ["Recipe", "load_recipe"]
