"""The recipe's model and data sections: what network is trained, on what images, and how they are prepared.

Each section checks its own fields in `__post_init__` (keys relative to it); rules across sections are
`Recipe.__post_init__`'s (schema.py).
"""

from dataclasses import dataclass

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
    decode_region: bool = setting(True, help="folder / shards: JPEGs decompress only the rows and iMCU columns of "
                                  "the crop (libjpeg-turbo partial decompression; the pixels of a full decode); "
                                  "false = decode the whole image, then crop")
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

