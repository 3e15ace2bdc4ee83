"""The recipe's sections: every key a recipe may set, its type, default and limits.

README's "Recipe keys" table is generated from these definitions
(`bigbatch keys`), so the documentation cannot drift from the code.

Every rule that needs only the recipe lives here, as Ray Train's ScalingConfig
validates itself: a rule over one section's fields in that section's
`__post_init__` (keys relative to it; the loader prefixes and sources them),
a rule across sections in `Recipe.__post_init__`. So `bigbatch show` refuses
what `bigbatch train` refuses, at load. Left to later: what needs the data
(steps per epoch: the plan), the model (trainer/models) or the machine (a GPU,
a reachable cluster address: cluster/).
"""

import dataclasses
from dataclasses import dataclass
from urllib.parse import urlparse

from bigbatch.optim import DECAYS, LR_SCALING_RULES, OPTIMIZERS, WARMUPS
from bigbatch.trainer.recipe.fields import REQUIRED, FieldProblem, setting

DATASETS = ("digits", "fashion_mnist", "mnist", "synthetic", "folder", "shards")
RESIZE_QUALITIES = ("antialias", "fast")  # trainer/data/decode.py
ROOT_NEEDED = {"folder": "the folder data set needs data.root",
               "mnist": "the mnist data set needs data.root, the directory of its IDX files",
               "shards": "the shards data set needs data.root, the directory or URI of index.json"}


@dataclass(frozen=True, kw_only=True)
class RenormConfig:
    momentum: float = setting(0.01, min=0.0, max=1.0, help="batch_renorm: update rate of the moving mean and "
                              "standard deviation")
    r_max: float = setting(3.0, min=1.0, help="batch_renorm: final bound of r (Ioffe 2017 section 4: 3)")
    d_max: float = setting(5.0, min=0.0, help="batch_renorm: final bound of d (section 4: 5)")
    start_step: int = setting(5000, min=0, help="batch_renorm: steps with r_max = 1, d_max = 0 (plain BatchNorm "
                              "with moving statistics; section 4: 5,000)")
    r_max_step: int = setting(40000, min=0, help="batch_renorm: step where r_max reaches its final value (40,000)")
    d_max_step: int = setting(25000, min=0, help="batch_renorm: step where d_max reaches its final value (25,000)")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = setting(REQUIRED, help="registry name (`bigbatch models`), or torchvision:NAME / timm:NAME")
    kwargs: dict = setting({}, help="extra keyword arguments for the model builder")
    zero_init_residual: bool = setting(False, help="zero the last BatchNorm gamma of each residual branch "
                                              "(Goyal et al. section 5.1)")
    drop_path_rate: float = setting(0.0, min=0.0, below=1.0, help="stochastic depth: the drop probability of "
                                    "residual branches (timm models: drop_path_rate; torchvision: "
                                    "stochastic_depth_prob; DARTS, NASNet, block-string families), 0 = off")
    norm: str = setting("batch", choices=("batch", "group", "batch_renorm", "layer"), help="replace every "
                        "BatchNorm of the model: group = GroupNorm (model.norm_groups), batch_renorm = Batch "
                        "Renormalization (model.renorm), layer = LayerNorm over channels (timm's LayerNorm2d)")
    norm_groups: int = setting(32, min=1, help="GroupNorm groups (Wu & He's 32; fewer where the channels need: "
                               "the largest common divisor)")
    renorm: RenormConfig = None  # type: ignore[assignment]
    head: str = setting("linear", choices=("linear", "bilinear"), help="bilinear = second-order pooling of the last "
                        "feature map (1x1 conv to head_channels, then B = X X^T / M, or iSQRT-COV) before the "
                        "classifier, for any catalogue backbone")
    head_channels: int = setting(64, min=2, help="bilinear head: channels N after the 1x1 convolution; the "
                                 "classifier sees N(N+1)/2 values")
    head_isqrt_iters: int = setting(0, min=0, help="bilinear head: 0 = bilinear pooling with signed sqrt and L2 "
                                    "(Lin et al. 2015); K > 0 = iSQRT-COV matrix square root with K Newton-Schulz "
                                    "iterations (Li et al. 2018 use 5)")
    drop_path_ramp: bool = setting(False, help="ramp the drop probability linearly from 0 at the first epoch to "
                                   "drop_path_rate at the last (the DARTS and NASNet papers' schedule)")

    def __post_init__(self) -> None:
        if self.name == "spos_supernet" and self.head != "linear":
            raise FieldProblem("head", "the supernet draws its path itself; another head around it would hide that")


@dataclass(frozen=True, kw_only=True)
class SizeScheduleConfig:
    start: int = setting(0, min=0, help="progressive resizing: training crop size up to start_epoch (0 = off: "
                         "data.image_size throughout)")
    end: int = setting(0, min=0, help="progressive resizing: training crop size from end_epoch on")
    start_epoch: int = setting(0, min=0, help="progressive resizing: the ramp starts after this epoch")
    end_epoch: int = setting(0, min=0, help="progressive resizing: the ramp reaches `end` at this epoch")
    multiple: int = setting(32, min=1, help="progressive resizing: sizes on the ramp are rounded to a multiple "
                            "of this (FFCV: 32)")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    name: str = setting(REQUIRED, choices=DATASETS, help="digits (bundled, 8x8), fashion_mnist (Debian's package, "
                        "28x28), mnist (IDX files in data.root), synthetic, or folder")
    batch_size: int = setting(REQUIRED, min=1, help="examples per worker per micro-step")
    eval_batch_size: int = setting(0, min=0, help="examples per worker per evaluation batch; 0 = batch_size")
    root: str = setting("", help="folder: directory holding train/CLASS/* and val/CLASS/*; mnist / fashion_mnist: "
                        "directory of the IDX files (fashion_mnist default: Debian's /usr/share/datasets/fashion-mnist)")
    image_size: int = setting(0, min=0, help="training/eval crop size; 0 = the data set's native size")
    channels: int = setting(0, choices=(0, 1, 3), help="0 = native; 3 repeats grayscale to RGB")
    resize_quality: str = setting("antialias", choices=RESIZE_QUALITIES, help="folder / shards: antialias = "
                                  "PIL's antialiased bilinear when shrinking (torchvision's image quality); "
                                  "fast = bilinear without antialiasing (faster; aliases on large shrinks)")
    image_size_schedule: SizeScheduleConfig = None  # type: ignore[assignment]
    eval_image_size: int = setting(0, min=0, help="folder / shards: evaluation crop size; 0 = image_size "
                                   "(torchvision's new ResNet-50 recipe: train 176, evaluate 232)")
    eval_crop_pct: float = setting(0.875, min=0.05, max=1.0, help="folder / shards: evaluation resizes the short side "
                                   "to eval_image_size / eval_crop_pct, then centre-crops (0.875: 256 -> 224)")
    augment: str = setting("none", choices=("none", "autoaugment", "randaugment", "trivialaugment"),
                           help="folder / shards: torchvision's policy after the crop and flip: AutoAugment (ImageNet "
                           "policy), RandAugment, TrivialAugmentWide; drawn per example from (seed, epoch, index)")
    randaugment_ops: int = setting(2, min=1, help="RandAugment: operations per image (N)")
    randaugment_magnitude: int = setting(9, min=0, max=30, help="RandAugment: magnitude (M, of 31 bins)")
    random_erasing: float = setting(0.0, min=0.0, max=1.0, help="folder / shards: probability of Random Erasing "
                                    "(timm --reprob, e.g. 0.25): one box of 2-33 percent of the image, aspect 0.3-3.3")
    random_erasing_mode: str = setting("pixel", choices=("pixel", "const"), help="fill of the erased box: per-pixel "
                                       "noise N(mean, std), or the mean colour (timm's pixel / const)")
    aug_repeats: int = setting(1, min=1, help="repeated augmentation (timm --aug-repeats, DeiT: 3): each step takes "
                               "global batch / R distinct examples, R differently augmented copies of each on other "
                               "micro-batches; an epoch visits N/R distinct examples. Not with shards")
    holdout: int = setting(0, min=0, help="training examples set apart (fixed split, seed 0) and never trained "
                           "on: an architecture search scores candidates on them (never on the test set)")
    num_classes: int = setting(10, min=2, help="synthetic: number of classes")
    shuffle_buffer: int = setting(1000, min=1, help="shards: samples each loader worker shuffles among")
    max_bad_images: int = setting(100, min=0, help="unreadable (corrupt) images a worker skips, each reported "
                                  "by name, before the run fails")
    train_examples: int = setting(1024, min=1, help="synthetic: training examples; folder: the expected count, "
                                  "used by `bigbatch show` where the folder is not on this machine")
    val_examples: int = setting(256, min=1, help="synthetic: held-out examples")
    loader_workers: int = setting(0, min=0, help="DataLoader worker processes (folder data sets)")
    prefetch_batches: int = setting(2, min=1, help="batches each loader worker prepares ahead (DataLoader "
                                    "prefetch_factor; with loader_workers > 0)")

    def __post_init__(self) -> None:
        if not self.root and self.name in ROOT_NEEDED:
            raise FieldProblem("root", ROOT_NEEDED[self.name])
        sizes = self.image_size_schedule
        decoded_only = [k for k, on in (("augment", self.augment != "none"), ("random_erasing", self.random_erasing),
                        ("eval_image_size", self.eval_image_size), ("eval_crop_pct", self.eval_crop_pct != 0.875),
                        ("image_size_schedule.start", sizes is not None and sizes.start)) if on]
        if decoded_only and self.name not in ("folder", "shards"):
            raise FieldProblem(decoded_only[0], f"works on decoded images (data.name folder or shards), not on "
                                                f"{self.name}")
        if self.aug_repeats > 1 and self.name == "shards":
            raise FieldProblem("aug_repeats", "needs an indexed data set (folder, mnist, fashion_mnist, digits, "
                                              "synthetic); shards stream each record once per epoch")
        if self.holdout and self.name == "shards":
            raise FieldProblem("holdout", "needs an indexed data set (digits, mnist, fashion_mnist, synthetic, "
                                          "folder); streamed shards cannot set examples apart")


@dataclass(frozen=True, kw_only=True)
class EmaConfig:
    decay: float = setting(0.0, min=0.0, below=1.0, help="exponential moving average of the weights (timm "
                           "ModelEmaV3), e.g. 0.9998; 0 = off. Every rank keeps it; evaluated beside the raw "
                           "weights (top1_ema) and saved in checkpoints")
    warmup: bool = setting(False, help="ramp the decay up: min(decay, 1 - n^(-2/3)) at the n-th update (timm's "
                           "warmup); with or without it the first update copies the weights")
    every_steps: int = setting(1, min=1, help="update the average every N optimizer steps")
    best: str = setting("raw", choices=("raw", "ema"), help="which weights' top-1 picks best.pt")

    def __post_init__(self) -> None:
        if self.best == "ema" and not self.decay:
            raise FieldProblem("best", "'ema' needs an average: set train.ema.decay (e.g. 0.9998)")


@dataclass(frozen=True, kw_only=True)
class MixupConfig:
    alpha: float = setting(0.0, min=0.0, help="Mixup: lambda ~ Beta(alpha, alpha) (timm --mixup, e.g. 0.2); 0 = off")
    cutmix_alpha: float = setting(0.0, min=0.0, help="CutMix: lambda ~ Beta(a, a) (timm --cutmix, e.g. 1.0); 0 = off")
    prob: float = setting(1.0, min=0.0, max=1.0, help="probability that a step is mixed at all")
    switch_prob: float = setting(0.5, min=0.0, max=1.0, help="with both on: probability of CutMix for a step")
    off_epoch: int = setting(0, min=0, help="no mixing from this epoch on (timm --mixup-off-epoch); 0 = never off")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = setting(REQUIRED, min=1, help="epochs; the lr schedule spans all of them")
    max_steps: int = setting(0, min=0, help="stop after this many optimizer steps; 0 = run the epochs")
    accumulation_steps: int = setting(1, min=1, help="micro-steps per optimizer step")
    label_smoothing: float = setting(0.0, min=0.0, below=1.0, help="cross-entropy label smoothing")
    auxiliary_weight: float = setting(0.4, min=0.0, help="weight of the auxiliary head's loss for models built "
                                      "with one (e.g. darts with model.kwargs.auxiliary: true)")
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"), help="autocast dtype (fp16 adds a grad scaler)")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="auto = cuda when available")
    threads: int = setting(0, min=0, help="torch intra-op threads per worker; 0 = torch's default")
    eval_flip: bool = setting(False, help="test-time augmentation: score each held-out image by the mean class "
                              "probabilities of it and its mirror image")
    eval_every_epochs: int = setting(1, min=0, help="evaluate every N epochs (always after the last); 0 = only at the end")
    log_every_steps: int = setting(10, min=1, help="write a step record to metrics.jsonl every N steps")
    checkpoint_every_steps: int = setting(0, min=0, help="also checkpoint every N steps; 0 = at epoch ends only")
    keep_checkpoints: int = setting(3, min=1, help="keep the newest K step checkpoints (plus best.pt)")
    on_nonfinite: str = setting("stop", choices=("stop", "skip"), help="non-finite loss: stop the run (found at the next log step, no per-step host sync), or skip the step (reads every step's loss before the update)")
    max_skipped_steps: int = setting(10, min=0, help="with on_nonfinite=skip: fail after this many skipped steps")
    progress_bar: bool = setting(True, help="console progress bar with ETA on a terminal (drawn by the driver "
                                 "under Ray/Horovod); false, or off a terminal: a line per log interval")
    channels_last: bool = setting(False, help="NHWC memory format for model and images (faster convolutions on "
                                  "GPUs with tensor cores)")
    compile: bool = setting(False, help="torch.compile the model (inductor; needs a C++ compiler on CPU)")
    cudnn_benchmark: bool = setting(True, help="CUDA: let cuDNN time its convolution algorithms once per input "
                                    "shape and keep the fastest")
    batch_growth_epochs: list[int] = setting([], help="epochs at which the global batch grows by "
                                             "batch_growth_factor (more accumulation steps, same lr; Smith et al. 2018)")
    batch_growth_factor: int = setting(2, min=2, help="factor for batch_growth_epochs")
    clip_grad: float = setting(0.0, min=0.0, help="clip the averaged, unscaled gradient (0 = off): the global "
                               "norm bound (clip_mode norm), the per-element bound (value) or AGC's clip factor "
                               "(agc, e.g. 0.01)")
    clip_mode: str = setting("norm", choices=("norm", "value", "agc"), help="norm = global L2 norm (timm "
                             "--clip-mode norm); agc = adaptive, unit-wise ||g|| <= factor x ||w|| (Brock et al. "
                             "2021), not on the final classifier")
    ema: EmaConfig = None  # type: ignore[assignment]
    mixup: MixupConfig = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        growth = self.batch_growth_epochs
        if growth != sorted(set(growth)) or any(not 0 < e < self.epochs for e in growth):
            raise FieldProblem("batch_growth_epochs", f"expected increasing epochs between 1 and train.epochs-1 "
                                                      f"({self.epochs - 1}), got {growth}")


@dataclass(frozen=True, kw_only=True)
class LarsConfig:
    trust_coefficient: float = setting(0.001, min=1e-12, help="eta in local_lr = eta * ||w|| / (||g|| + wd * ||w|| + eps)")
    eps: float = setting(0.0, min=0.0, help="added to the LARS denominator")
    trust_clip: bool = setting(False, help="LARC: cap local_lr / lr at 1")


@dataclass(frozen=True, kw_only=True)
class LambConfig:
    betas: list[float] = setting([0.9, 0.999], help="Adam moment decay rates (two values in [0, 1))")
    eps: float = setting(1e-6, min=0.0, help="added to sqrt(v_hat)")
    bias_correction: bool = setting(True, help="Adam bias correction of the moments")

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise FieldProblem("betas", f"expected two values in [0, 1), got {self.betas}")


@dataclass(frozen=True, kw_only=True)
class RmspropConfig:
    alpha: float = setting(0.9, min=0.0, below=1.0, help="decay of the mean square (TensorFlow's rho)")
    eps: float = setting(0.001, min=0.0, help="inside the square root, as TensorFlow (MobileNet v2, MnasNet and "
                         "EfficientNet used 0.001)")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: str = setting("sgd", choices=OPTIMIZERS, help="sgd (with momentum correction), lars, lamb or "
                      "rmsproptf (RMSProp in TensorFlow's form)")
    base_lr: float = setting(REQUIRED, min=0.0, help="lr at reference_batch; scaled to the global batch")
    reference_batch: int = setting(256, min=1, help="batch size base_lr was tuned for")
    lr_scaling: str = setting("linear", choices=LR_SCALING_RULES, help="how the lr grows with the global batch")
    momentum: float = setting(0.9, min=0.0, below=1.0, help="momentum (sgd, lars)")
    nesterov: bool = setting(False, help="Nesterov momentum (sgd, lars)")
    momentum_correction: bool = setting(True, help="sgd: rescale the momentum buffer when the lr changes "
                                                   "(Goyal et al. section 2.4)")
    weight_decay: float = setting(1e-4, min=0.0, help="weight decay (L2 for sgd/lars, decoupled for lamb)")
    exclude_norm_and_bias: bool = setting(True, help="no weight decay / no layer adaptation for biases and "
                                                     "parameters with ndim <= 1 (BatchNorm)")
    exclude_patterns: list[str] = setting([], help="more parameter-name patterns (fnmatch) to exclude")
    warmup_epochs: float = setting(0.0, min=0.0, help="gradual warmup length in epochs")
    warmup_steps: int = setting(0, min=0, help="gradual warmup length in steps (instead of warmup_epochs)")
    warmup_from: str = setting("base_lr", choices=("base_lr", "zero"),
                               help="warmup starts at the unscaled base_lr (Goyal et al.; capped at the scaled lr) or at 0")
    warmup_mode: str = setting("linear", choices=WARMUPS, help="linear ramp, or constant at the start value")
    schedule: str = setting("cosine", choices=(*DECAYS, "step"), help="decay after warmup")
    end_lr: float = setting(0.0, min=0.0, help="lr at the last step (cosine, poly, linear)")
    poly_power: float = setting(2.0, min=0.0, help="poly: power of the decay (MLPerf ResNet-50: 2)")
    decay_epochs: list[float] = setting([], help="multistep: epochs at which the lr is multiplied by decay_factor")
    decay_every_epochs: float = setting(0.0, min=0.0, help="step: multiply the lr by decay_factor every N epochs")
    decay_factor: float = setting(0.1, min=0.0, max=1.0, help="multistep / step factor")
    lars: LarsConfig = None  # type: ignore[assignment]
    lamb: LambConfig = None  # type: ignore[assignment]
    rmsprop: RmspropConfig = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.warmup_steps and self.warmup_epochs:
            raise FieldProblem("warmup_steps", "set warmup_steps or warmup_epochs, not both")
        if self.schedule == "multistep" and not self.decay_epochs:
            raise FieldProblem("decay_epochs", "the multistep schedule needs a list of epochs, e.g. [30, 60, 80]")
        if self.decay_epochs != sorted(self.decay_epochs) or any(e <= 0 for e in self.decay_epochs):
            raise FieldProblem("decay_epochs", f"expected increasing positive epochs, got {self.decay_epochs}")
        if self.schedule == "step" and self.decay_every_epochs <= 0:
            raise FieldProblem("decay_every_epochs", "the step schedule needs decay_every_epochs > 0")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    workers: int = setting(1, min=1, help="data-parallel workers (world size)")
    min_workers: int = setting(0, min=0, help="elastic runs: the fewest workers the run goes on with after losing "
                               "some (0 = cluster.workers, a fixed group); the global batch is held at every size")
    backend: str = setting("local", choices=("local", "torch", "horovod"),
                           help="local = one plain process; torch = Ray Train workers over torch.distributed; "
                                "horovod = Horovod workers launched by Ray (`make horovod`)")
    cpus_per_worker: float = setting(1.0, min=0.0, help="CPUs Ray reserves per worker")
    gpus_per_worker: float = setting(0.0, min=0.0, help="GPUs per worker (> 0: nccl and CUDA)")
    address: str = setting("", help="Ray cluster address; empty = start Ray embedded on this machine")
    max_failures: int = setting(0, min=0, help="worker-group restarts after a worker fails (resuming from the "
                                               "latest checkpoint)")
    storage_path: str = setting("", help="where Ray Train keeps reported checkpoints; must be seen by every node "
                                "(shared directory or s3:// / gs:// URI); empty = <run dir>/ray")
    start_timeout_s: float = setting(300.0, min=1.0, help="fail if the worker group cannot start (no free or "
                                     "replacement node) within this many seconds")
    restart_timeout_s: float = setting(60.0, min=1.0, help="elastic runs: how long a restart waits to place its "
                                       "workers before it asks again with what is left (Ray counts a lost node "
                                       "as present until its death is noticed and its view refreshes: tens of seconds)")
    connect_timeout_s: float = setting(15.0, min=1.0, help="fail if cluster.address does not answer within this "
                                       "many seconds")

    @property
    def elastic(self) -> bool:
        """Whether the group may run on fewer workers than cluster.workers (cluster.min_workers)."""
        return 0 < self.min_workers < self.workers

    @property
    def world_sizes(self) -> list[int]:
        """Every world size the group may have: cluster.min_workers (or cluster.workers) .. cluster.workers."""
        return list(range(self.min_workers or self.workers, self.workers + 1))

    def __post_init__(self) -> None:
        if self.backend == "local" and self.workers != 1:
            raise FieldProblem("workers", f"the 'local' backend runs exactly 1 worker, got {self.workers}")
        if self.min_workers > self.workers:
            raise FieldProblem("min_workers", f"{self.min_workers} is more than cluster.workers ({self.workers})")
        if self.elastic and self.backend == "horovod":
            raise FieldProblem("min_workers", "an elastic group needs cluster.backend: torch (Ray Train); horovod "
                                              "runs a fixed group")
        if self.backend == "horovod" and self.gpus_per_worker != int(self.gpus_per_worker):
            raise FieldProblem("gpus_per_worker", f"Horovod gives each worker whole GPUs (NCCL cannot share one "
                                                  f"between ranks); got {self.gpus_per_worker:g}, expected 0, 1, 2, ...")
        if self.address not in ("", "auto", "local") and split_address(self.address) is None:
            raise FieldProblem("address", f"expected HOST:PORT or SCHEME://HOST:PORT, got {self.address!r}")


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address HOST:PORT or SCHEME://HOST:PORT (e.g. ray://head:10001), else None."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is no number, or out of range
        return None
    return (host, port) if host and port else None


@dataclass(frozen=True, kw_only=True)
class BatchNormConfig:
    sync: str = setting("none", choices=("none", "all", "group"),
                        help="cross-replica BatchNorm: none, over all workers, or over groups of bn.group_size")
    group_size: int = setting(1, min=1, help="workers per BatchNorm group with sync: group")


@dataclass(frozen=True, kw_only=True)
class TrackConfig:
    wandb: str = setting("auto", choices=("auto", "online", "offline", "disabled"),
                         help="auto = WANDB_MODE if set, else online with an API key, else offline (wandb sync later)")
    project: str = setting("bigbatch", help="wandb project")
    entity: str = setting("", help="wandb entity (team or user); empty = your default")
    tensorboard: bool = setting(True, help="TensorBoard event files in RUN_DIR/tensorboard (rank 0), for "
                                "`bigbatch dashboard`: the local dashboard, no account or network")
    noise_scale: bool = setting(True, help="the gradient noise scale B_simple (McCandlish et al. 2018), the batch "
                                "beyond which larger batches stop paying: on each log step of a step with more than "
                                "one micro-batch (world size x accumulation > 1), from one micro-batch's gradient "
                                "and the global one; step records get grad_sq_norm_est, grad_var_est and "
                                "gradient_noise_scale, the summary its advice")
    noise_scale_decay: float = setting(0.95, min=0.0, below=1.0, help="decay of the moving averages of the "
                                       "squared norm of G and tr(Sigma), per measurement (log step)")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    population: int = setting(50, min=2, help="bigbatch search: candidates per generation (Guo et al.: 50)")
    generations: int = setting(20, min=1, help="bigbatch search: generations of the evolution (20)")
    parents: int = setting(10, min=1, help="bigbatch search: the top candidates of all scored so far that "
                           "mutate and cross over (10)")
    mutations: int = setting(25, min=0, help="bigbatch search: mutated candidates per generation (25)")
    mutation_prob: float = setting(0.1, min=0.0, max=1.0, help="bigbatch search: probability that a mutation "
                                   "redraws a gene (0.1)")
    crossovers: int = setting(25, min=0, help="bigbatch search: crossover candidates per generation (25)")
    max_macs_m: float = setting(0.0, min=0.0, help="bigbatch search: cap on a candidate's multiply-adds in "
                                "millions at data.image_size, counted by the catalogue's counter; 0 = none")
    max_latency_ms: float = setting(0.0, min=0.0, help="bigbatch search: cap on a candidate's latency at batch 1 "
                                    "in ms on the scoring actors' device, from a per-block table measured once "
                                    "there (OUT/latency.json); 0 = none")
    recalibrate_images: int = setting(20000, min=1, help="bigbatch search: training images that recompute "
                                      "BatchNorm statistics before a candidate is scored (Guo et al.: 20,000)")
    workers: int = setting(0, min=0, help="bigbatch search: scoring actors run side by side on the cluster "
                           "(cluster.cpus_per_worker / gpus_per_worker each); 0 = cluster.workers")
    random_baseline: bool = setting(True, help="bigbatch search: also score as many uniform random candidates "
                                    "under the same caps, for comparison")
    supernet_run: str = setting("", help="bigbatch search: run directory of a trained supernet to search; "
                                "empty = train it first into OUT/supernet")
    retrain: list[str] = setting([], help="bigbatch search: KEY=VALUE overrides for OUT/best.yaml, the recipe "
                                 "that trains the found network from scratch (e.g. train.epochs=90)")
    verify: int = setting(0, min=0, help="bigbatch search: ranking check: train the top-k candidates of the "
                          "evolution and k of the random baseline alone (search.verify_retrain) and report "
                          "Kendall's tau between supernet score and their held-out top-1; 0 = off")
    verify_retrain: list[str] = setting(["train.epochs=1"], help="bigbatch search: KEY=VALUE overrides for the "
                                        "brief stand-alone training of search.verify (trained without "
                                        "data.holdout's examples, scored on them)")

    def __post_init__(self) -> None:
        if self.parents > self.population:
            raise FieldProblem("parents", f"{self.parents} is more than search.population ({self.population})")


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

    def __post_init__(self) -> None:
        """The rules across sections (each section has checked its own)."""
        model, data, train, cluster, bn = self.model, self.data, self.train, self.cluster, self.bn
        batch = self.global_batch
        uneven = [w for w in cluster.world_sizes if batch % w]
        if uneven:
            even = [w for w in range(1, cluster.workers + 1) if batch % w == 0]
            raise FieldProblem("cluster.min_workers", f"the global batch {batch} (cluster.workers x data.batch_size "
                               f"x train.accumulation_steps) cannot be split evenly over {', '.join(map(str, uneven))} "
                               f"workers; world sizes that keep it: {', '.join(map(str, even))} (raise min_workers, "
                               f"or choose a batch they all divide)")
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
