"""One path of a one-shot supernet per optimizer step (SPOS): a hook of the step.

The model draws the path from (seed, step), so every rank and a resumed run train the same one with no
communication; after the gradient all-reduce the blocks off the path lose their gradients, so the
optimizer gives them no momentum and no weight decay (see trainer/models/spos_supernet.py).
"""

from typing import Protocol, runtime_checkable

import torch.nn as nn

from bigbatch.trainer.step.hooks import Hook


@runtime_checkable
class Supernet(Protocol):
    def draw_path(self, seed: int, step: int, image_size: int) -> list[int]: ...

    def set_path(self, path: list[int]) -> None: ...

    def drop_off_path_grads(self) -> None: ...


class PathPerStep(Hook):
    def __init__(self, model: Supernet, seed: int, image_size: int):
        self.model, self.seed, self.image_size = model, seed, image_size

    @classmethod
    def of(cls, model: nn.Module, seed: int, image_size: int) -> "PathPerStep | None":
        return cls(model, seed, image_size) if isinstance(model, Supernet) else None

    def before_step(self, ctx) -> None:
        self.model.set_path(self.model.draw_path(self.seed, ctx.step, self.image_size))

    def after_all_reduce(self, ctx) -> None:
        self.model.drop_off_path_grads()
