"""The recipe's train and optim sections: the training loop's settings (with its EMA, Mixup/CutMix and
adaptive-batch subsections) and the optimizer with its learning-rate schedule (with the LARS, LAMB and RMSProp subsections).

Each section checks its own fields in `__post_init__` (keys relative to it); rules across sections are
`Recipe.__post_init__`'s (schema.py).
"""

from dataclasses import dataclass

from bigbatch.optim import DECAYS, LR_SCALING_RULES, OPTIMIZERS, WARMUPS
from bigbatch.trainer.recipe.fields import REQUIRED, FieldProblem, setting


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
class AdaptiveConfig:
    min_batch: int = setting(0, min=0, help="train.batch_policy adaptive: the smallest global batch the policy may "
                             "choose; 0 = the recipe's global batch G0 (cluster.workers x data.batch_size x "
                             "train.accumulation_steps)")
    max_batch: int = setting(0, min=0, help="train.batch_policy adaptive: the largest global batch the policy may "
                             "choose; 0 = 8 x G0")
    every_steps: int = setting(50, min=1, help="the policy looks again at the first log step at least this many "
                               "steps after its last look (it decides on log steps, where the gradient noise scale "
                               "is measured)")
    min_improvement: float = setting(1.05, min=1.0, help="predicted goodput must improve by this factor to switch "
                                     "batch (AdaptDL's lesson: without a margin the batch flaps)")
    min_readings: int = setting(5, min=1, help="gradient noise scale readings (measured log steps) before the "
                                "policy steers (at least 2 in effect: the lower bound it steers on needs their "
                                "spread); until then it keeps the batch and the AdaScale gain is 1")
    assume_step_s: float = setting(0.0, min=0.0, help="a declared step-time model: a step of G examples on W "
                                   "workers takes assume_step_s + assume_example_s x G / W seconds; both 0 = measure "
                                   "the step times of this run")
    assume_example_s: float = setting(0.0, min=0.0, help="seconds per example per worker in the declared step-time "
                                      "model (see assume_step_s)")

    def __post_init__(self) -> None:
        if self.min_batch and self.max_batch and self.min_batch > self.max_batch:
            raise FieldProblem("max_batch", f"expected at least train.adaptive.min_batch ({self.min_batch}), "
                                            f"got {self.max_batch}")


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
    batch_policy: str = setting("fixed", choices=("fixed", "adaptive"), help="fixed = one global batch, as planned; "
                                "adaptive = the run chooses its global batch in train.adaptive's range by predicted "
                                "goodput and scales the lr by the AdaScale gain (sgd and lars; see docs)")
    clip_grad: float = setting(0.0, min=0.0, help="clip the averaged, unscaled gradient (0 = off): the global "
                               "norm bound (clip_mode norm), the per-element bound (value) or AGC's clip factor "
                               "(agc, e.g. 0.01)")
    clip_mode: str = setting("norm", choices=("norm", "value", "agc"), help="norm = global L2 norm (timm "
                             "--clip-mode norm); agc = adaptive, unit-wise ||g|| <= factor x ||w|| (Brock et al. "
                             "2021), not on the final classifier")
    ema: EmaConfig = None  # type: ignore[assignment]
    mixup: MixupConfig = None  # type: ignore[assignment]
    adaptive: AdaptiveConfig = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        growth = self.batch_growth_epochs
        if growth != sorted(set(growth)) or any(not 0 < e < self.epochs for e in growth):
            raise FieldProblem("batch_growth_epochs", f"expected increasing epochs between 1 and train.epochs-1 "
                                                      f"({self.epochs - 1}), got {growth}")
        if growth and self.batch_policy == "adaptive":
            raise FieldProblem("batch_growth_epochs", f"expected none with train.batch_policy adaptive, which "
                                                      f"chooses the global batch itself (both change the batch), "
                                                      f"got {growth}")


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

