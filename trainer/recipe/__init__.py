"""Recipes: YAML files validated into typed, frozen config objects."""

from trainer.recipe.load import load_recipe
from trainer.recipe.schema import Recipe

__all__ = ["Recipe", "load_recipe"]
