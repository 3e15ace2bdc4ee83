"""Communication counted, not assumed: gradient all-reduces per optimizer step seen by the profiler (gloo's
own `gloo:all_reduce` events), eager and torch.compile, with accumulation 1 and 4. DDP must all-reduce each
bucket once per optimizer step, on the last micro-step only (no_sync on the others)."""

import pytest

from tests.gloo import spawn_gloo

STEPS = 3


def _count(rank: int, world: int, tiny: str, run_root: str) -> None:
    from torch.nn.parallel import DistributedDataParallel
    from torch.profiler import ProfilerActivity, profile

    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer
    from bigbatch.trainer.step import StepContext, train_step

    counts = {}
    for compiled in (False, True):
        for accumulation in (1, 4):
            recipe = load_recipe(tiny, [
                "model.name=mlp", "model.kwargs={}", "cluster.backend=torch", "cluster.workers=2", "data.batch_size=8",
                f"train.accumulation_steps={accumulation}", f"train.compile={str(compiled).lower()}",
                f"train.max_steps={STEPS}", "train.eval_every_epochs=0", "train.log_every_steps=100"])
            trainer = Trainer(recipe, f"{run_root}/{compiled}-{accumulation}", TorchDistributedCollective("cpu"))
            ddp = trainer.wrapped_model
            assert isinstance(ddp, DistributedDataParallel)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                batches = trainer_batches(trainer, accumulation)
                for step in range(STEPS):  # the loop's own optimizer step, fed the first epoch's micro-batches
                    ctx = StepContext(step=step, epoch=0, accumulation=accumulation, lr=0.01, logging=False,
                                      criterion=trainer.parts.criterion)
                    train_step(trainer.learner, ctx, batches, trainer.hooks)
            buckets = len(ddp.reducer._get_zeros_like_grad_buckets())
            counts[compiled, accumulation] = (sum(e.name == "gloo:all_reduce" for e in prof.events()), buckets)
    for (compiled, accumulation), (all_reduces, buckets) in counts.items():
        assert all_reduces == STEPS * buckets, (f"compiled={compiled} accumulation={accumulation}: "
                                                 f"{all_reduces} all-reduces for {STEPS} steps x {buckets} buckets")


def trainer_batches(trainer, accumulation: int):
    from bigbatch.trainer.data import TrainOrder, iterate_batches

    order = TrainOrder(seed=0, num_examples=len(trainer.parts.data.train), batch_size=8, world_size=2,
                       rank=trainer.collective.rank, accumulation_steps=accumulation)
    return iter(iterate_batches(trainer.parts.data.train, order.micro_batches(0, trainer.step)))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_all_reduce_per_bucket_per_optimizer_step_eager_and_compiled(tiny, tmp_path):
    spawn_gloo(_count, 2, str(tiny), str(tmp_path))
