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


class HostTraffic(TorchDispatchMode):
    """What would make a GPU step wait for the host, counted per step while inside the step (not while the data
    loader hands over a batch): a read of a device value (aten._local_scalar_dense), a tensor built from
    host numbers (aten.lift_fresh: torch.tensor(...) of Python values, a blocking copy when it goes to the
    device), and a shape that depends on the data (nonzero, boolean-mask indexing: a sync on CUDA)."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.trainer, self.inside, self.seen = trainer, False, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.inside and self._waits(func, args):
            self.seen[self.trainer.step, func.__name__] += 1
        return func(*args, **(kwargs or {}))

    @staticmethod
    def _waits(func, args) -> bool:
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.lift_fresh.default,
                    torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default):
            return True
        if func in (torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
                    torch.ops.aten.index.Tensor):
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
        return False


@pytest.mark.slow
def test_no_host_traffic_inside_quiet_steps_with_every_feature_on(tiny, tmp_path, monkeypatch):
    """Folder data (uint8 normalised on the device), Batch Renorm in its ramp, mixup/cutmix, EMA, clipping and
    the noise scale (accumulation 2) all on: between log steps the step builds no tensor from host numbers,
    reads no device value and has no data-dependent shape."""
    import bigbatch.trainer.run.loop as loop
    from tests.images import write_jpeg_folder

    root = write_jpeg_folder(tmp_path / "data", per_class=8)
    recipe = load_recipe(tiny, [
        "data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
        "data.loader_workers=1", "train.accumulation_steps=2", "train.max_steps=6", "train.log_every_steps=3",
        "train.eval_every_epochs=0", "train.epochs=3", "model.norm=batch_renorm",
        "model.renorm={start_step: 0, r_max_step: 100, d_max_step: 100}",
        "train.mixup={alpha: 0.2, cutmix_alpha: 1.0}", "train.ema={decay: 0.9}", "train.clip_grad=1.0",
        "optim.name=lars"])
    trainer = Trainer(recipe, tmp_path / "run", LocalCollective())
    traffic = HostTraffic(trainer)
    step = loop.train_step

    def watched_step(learner, ctx, micro_batches, hooks):
        def batches():
            while True:
                traffic.inside = False  # the loader's own work (decoding, collating) is the host's anyway
                batch = next(micro_batches)
                traffic.inside = True
                yield batch
        traffic.inside = True
        try:
            return step(learner, ctx, batches(), hooks)
        finally:
            traffic.inside = False

    monkeypatch.setattr(loop, "train_step", watched_step)
    with traffic:
        trainer.fit()
    assert trainer.step == 6
    # log steps 3 and 6 read while trainer.step is 2 and 5 (norms before the update); settling reads after it
    quiet = {key: n for key, n in traffic.seen.items() if key[0] not in (2, 5)}
    once = {(0, "lift_fresh.default"): 2}  # the first step makes the device's mean and std, once per run
    assert {key: n for key, n in quiet.items() if key not in once} == {} and quiet.items() <= once.items()
    assert sum(traffic.seen.values()) >= 1  # the log steps do read: the counter sees reads
