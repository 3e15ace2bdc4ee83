"""Host-device syncs per step, counted: every read of a tensor value by the host during a run (`.item()`,
`float()`, `bool()` dispatch aten._local_scalar_dense; `.tolist()` is wrapped), attributed to the optimizer
step it happened in. On a GPU each is a wait for the device; between log steps there must be none."""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer


class HostReads(TorchDispatchMode):
    def __init__(self, trainer: Trainer):
        super().__init__()
        self.trainer, self.per_step = trainer, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.per_step[self.trainer.step] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("on_nonfinite, reads_every_step", [("stop", False), ("skip", True)])
def test_no_host_sync_between_log_steps(tiny, tmp_path, monkeypatch, on_nonfinite, reads_every_step):
    recipe = load_recipe(tiny, ["train.max_steps=12", "train.log_every_steps=6", "train.eval_every_epochs=0",
                                f"train.on_nonfinite={on_nonfinite}", "optim.name=lars"])
    trainer = Trainer(recipe, tmp_path / "run", LocalCollective())
    reads = HostReads(trainer)
    tolist = torch.Tensor.tolist

    def counted_tolist(tensor):
        reads.per_step[trainer.step] += 1
        return tolist(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    with reads:
        trainer.fit()
    # trainer.step counts the steps done: the log steps 6 and 12 read while it is 5 (gradient norm, before the
    # update) and 6 (the settled loss and stop flag, the record's numbers); likewise 11 and 12
    quiet = [s for s in range(12) if s not in (5, 6, 11, 12)]
    if reads_every_step:
        assert all(reads.per_step[s] >= 1 for s in quiet)
    else:
        assert {s: reads.per_step[s] for s in quiet if reads.per_step[s]} == {}
        assert reads.per_step[5] + reads.per_step[6] >= 1  # the log step does read: loss, gradient norm
