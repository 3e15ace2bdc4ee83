"""Model catalogue. Importing the package registers every built-in builder."""

from bigbatch.trainer.models import (  # noqa: F401  (importing registers the builders)
    block_string,
    catalogue,
    condensenet,
    darts,
    nasnet,
    proxylessnas,
    shufflenet_v1,
    small_images,
    small_resnet,
    spos,
    spos_supernet,
)
from bigbatch.trainer.models.registry import create_model, entries, register

__all__ = ["create_model", "entries", "register"]
