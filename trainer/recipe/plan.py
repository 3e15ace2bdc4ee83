"""Values derived from a recipe and the real world size: the numbers `bigbatch show` prints."""

from dataclasses import asdict, dataclass

from optim import scale_lr
from trainer.errors import RecipeError
from trainer.recipe.schema import Recipe


@dataclass(frozen=True)
class Plan:
    world_size: int
    per_worker_batch: int
    accumulation_steps: int
    global_batch: int
    train_examples: int
    steps_per_epoch: int
    scaled_lr: float
    warmup_start_lr: float
    warmup_steps: int
    schedule_steps: int  # the lr schedule spans every epoch
    total_steps: int  # optimizer steps this run performs (train.max_steps caps it)

    def as_dict(self) -> dict:
        return asdict(self)


def make_plan(recipe: Recipe, train_examples: int, world_size: int | None = None) -> Plan:
    """Global batch = workers x per-worker batch x accumulation; lr scaled to it (Goyal et al. section 2.1)."""
    world = world_size or recipe.cluster.workers
    global_batch = world * recipe.data.batch_size * recipe.train.accumulation_steps
    steps_per_epoch = train_examples // global_batch
    if steps_per_epoch == 0:
        raise RecipeError(f"data.batch_size: global batch {global_batch} (= {world} workers x {recipe.data.batch_size} "
                          f"x {recipe.train.accumulation_steps} accumulation steps) exceeds the "
                          f"{train_examples} training examples")
    opt = recipe.optim
    scaled = scale_lr(opt.base_lr, global_batch, opt.reference_batch, opt.lr_scaling)
    warmup = opt.warmup_steps or round(opt.warmup_epochs * steps_per_epoch)
    schedule_steps = recipe.train.epochs * steps_per_epoch
    total = min(recipe.train.max_steps, schedule_steps) if recipe.train.max_steps else schedule_steps
    return Plan(
        world_size=world, per_worker_batch=recipe.data.batch_size,
        accumulation_steps=recipe.train.accumulation_steps, global_batch=global_batch,
        train_examples=train_examples, steps_per_epoch=steps_per_epoch, scaled_lr=scaled,
        warmup_start_lr=min(opt.base_lr, scaled) if opt.warmup_from == "base_lr" else 0.0,
        warmup_steps=warmup, schedule_steps=schedule_steps, total_steps=total,
    )
