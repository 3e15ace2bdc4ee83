"""Model catalogue. Importing the package registers every built-in builder."""

from trainer.models import catalogue, darts, shufflenet_v1, small_resnet  # noqa: F401  (registers builders)
from trainer.models.registry import create_model, entries, register

__all__ = ["create_model", "entries", "register"]
