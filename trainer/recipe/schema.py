"""The recipe: every key a recipe may set, its type, default and limits.

The keys table in docs/recipe-keys.md is generated from these definitions
(`bigbatch keys`), so the documentation cannot drift from the code.

Every rule that needs only the recipe is checked at load, as Ray Train's ScalingConfig
validates itself: a rule over one section's fields in that section's
`__post_init__` (keys relative to it; the loader prefixes and sources them),
a rule across sections in `Recipe.__post_init__` here. So `bigbatch show` refuses
what `bigbatch train` refuses, at load. Left to later: what needs the data
(steps per epoch: the plan), the model (trainer/models) or the machine (a GPU,
a reachable cluster address: cluster/).

The sections live by job in model_data.py (model, data), train_optim.py (train, optim)
and cluster_track_search.py (cluster, bn, track, search); every name is importable from here.
"""

import dataclasses
from dataclasses import dataclass

from bigbatch.trainer.recipe.cluster_track_search import (
    BatchNormConfig,
    ClusterConfig,
    SearchConfig,
    TrackConfig,
    split_address,
)
from bigbatch.trainer.recipe.fields import FieldProblem, setting
from bigbatch.trainer.recipe.model_data import (
    DATASETS,
    RESIZE_QUALITIES,
    ROOT_NEEDED,
    DataConfig,
    ModelConfig,
    RenormConfig,
    SizeScheduleConfig,
)
from bigbatch.trainer.recipe.train_optim import (
    AdaptiveConfig,
    EmaConfig,
    LambConfig,
    LarsConfig,
    MixupConfig,
    OptimConfig,
    RmspropConfig,
    TrainConfig,
)

__all__ = ["DATASETS", "RESIZE_QUALITIES", "ROOT_NEEDED", "AdaptiveConfig", "BatchNormConfig", "ClusterConfig", "DataConfig",
           "EmaConfig", "LambConfig", "LarsConfig", "MixupConfig", "ModelConfig", "OptimConfig", "Recipe",
           "RenormConfig", "RmspropConfig", "SearchConfig", "SizeScheduleConfig", "TrackConfig", "TrainConfig",
           "split_address"]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    description: str = setting("", help="one line shown by `bigbatch recipes`")
    deviations: list[str] = setting([], help="where the recipe departs from the procedure it follows, and why "
                                    "(`bigbatch show` prints them)")
    seed: int = setting(0, min=0, help="seeds weights, data order and augmentation")
    model: ModelConfig = None  # type: ignore[assignment]
    data: DataConfig = None  # type: ignore[assignment]
    train: TrainConfig = None  # type: ignore[assignment]
    optim: OptimConfig = None  # type: ignore[assignment]
    cluster: ClusterConfig = None  # type: ignore[assignment]
    bn: BatchNormConfig = None  # type: ignore[assignment]
    track: TrackConfig = None  # type: ignore[assignment]
    search: SearchConfig = None  # type: ignore[assignment]

    @property
    def global_batch(self) -> int:
        """The run's invariant: cluster.workers x data.batch_size x train.accumulation_steps (at epoch 0)."""
        return self.cluster.workers * self.data.batch_size * self.train.accumulation_steps

    @property
    def adaptive_range(self) -> tuple[int, int]:
        """train.batch_policy adaptive: the (smallest, largest) global batch the policy may choose, zeros resolved
        (min_batch 0 = the global batch G0, max_batch 0 = 8 x G0)."""
        adaptive = self.train.adaptive or AdaptiveConfig()
        return adaptive.min_batch or self.global_batch, adaptive.max_batch or 8 * self.global_batch

    def __post_init__(self) -> None:
        """The rules across sections (each section has checked its own)."""
        model, data, train, cluster, bn = self.model, self.data, self.train, self.cluster, self.bn
        batch = self.global_batch
        uneven = [w for w in cluster.world_sizes if batch % w]
        if data.batch_size == 1 and uneven:  # G // W + 1 micro-steps of 1: a rank with G // W gets an empty one
            raise FieldProblem("data.batch_size", f"1 leaves a rank an empty micro-batch when {uneven[0]} workers "
                               f"share the global batch {batch} unevenly; use 2 or more")
        if bn.sync == "group" and cluster.workers % bn.group_size:
            raise FieldProblem("bn.group_size", f"must divide cluster.workers ({cluster.workers}), got {bn.group_size}")
        if bn.sync == "group" and any(w % bn.group_size for w in cluster.world_sizes):
            raise FieldProblem("bn.group_size", f"must divide every world size the elastic group may have "
                               f"({', '.join(map(str, cluster.world_sizes))}), got {bn.group_size}")
        if model.norm != "batch" and bn.sync != "none":
            raise FieldProblem("bn.sync", f"cross-replica sync is for BatchNorm; model.norm is {model.norm!r} (set "
                                          f"bn.sync: none)")
        if batch % data.aug_repeats:
            raise FieldProblem("data.aug_repeats", f"must divide the global batch {batch} (cluster.workers x "
                                                   f"data.batch_size x train.accumulation_steps), got {data.aug_repeats}")
        sizes = data.image_size_schedule
        if sizes.start and not (sizes.end and sizes.start_epoch < sizes.end_epoch <= train.epochs):
            raise FieldProblem("data.image_size_schedule", f"expected start and end sizes and start_epoch < end_epoch "
                               f"<= train.epochs ({train.epochs}), got {dataclasses.asdict(sizes)}")
        if model.name == "spos_supernet" and train.compile:
            raise FieldProblem("train.compile", "the supernet trains another path every step, and each path would "
                                                "compile anew")
        if train.batch_policy == "adaptive":
            self._check_adaptive()

    def _check_adaptive(self) -> None:
        """train.batch_policy adaptive against the optimizer, the data and the cluster."""
        data, optim, workers = self.data, self.optim, self.cluster.workers
        if optim.name not in ("sgd", "lars"):
            raise FieldProblem("train.batch_policy", f"adaptive scales the lr by AdaScale's gain, which is derived for "
                               f"SGD's update (linear in the gradient); optim.name is {optim.name!r}: use sgd or "
                               f"lars, or train.batch_policy: fixed")
        if data.name == "shards":
            raise FieldProblem("train.batch_policy", "adaptive reads indexed data sets (digits, mnist, fashion_mnist, "
                               "synthetic, folder); data.name shards streams one global batch per epoch: use "
                               "train.batch_policy: fixed")
        (lo, hi), max_set = self.adaptive_range, (self.train.adaptive or AdaptiveConfig()).max_batch
        if lo < workers:
            raise FieldProblem("train.adaptive.min_batch", f"expected at least cluster.workers ({workers}): every "
                                                           f"worker needs an example a step, got {lo}")
        if lo > hi and max_set:  # min_batch 0: G0 is above the max
            raise FieldProblem("train.adaptive.max_batch", f"expected at least the smallest batch, min_batch 0 = the "
                               f"global batch {lo} (cluster.workers x data.batch_size x train.accumulation_steps), "
                               f"got {hi}")
        if lo > hi:  # max_batch 0: the min is above 8 x G0 (both set: AdaptiveConfig has refused)
            raise FieldProblem("train.adaptive.min_batch", f"expected at most the largest batch, max_batch 0 = 8 x "
                               f"the global batch = {hi}, got {lo}")
        if data.aug_repeats > 1 and (lo % data.aug_repeats or hi % data.aug_repeats):
            raise FieldProblem("data.aug_repeats", f"must divide both ends of the adaptive batch range "
                               f"(train.adaptive.min_batch {lo}, max_batch {hi}), got {data.aug_repeats}")
