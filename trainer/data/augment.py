"""Per-example augmentation after RandomResizedCrop + flip, on the decoded uint8 image (folder and shards).

`data.augment` picks one of torchvision's policies, applied to uint8 CHW
tensors as torchvision ships them (transforms.v2): AutoAugment with its
ImageNet policy (Cubuk et al. 2019), RandAugment (`data.randaugment_ops`,
`data.randaugment_magnitude`; Cubuk et al. 2020) or TrivialAugmentWide (Müller
& Hutter 2021, torchvision's "new recipe"). `data.random_erasing` is the
probability of Random Erasing (Zhong et al. 2020) with timm's defaults: area
2%-33% of the image, aspect ratio 0.3-3.3, one box, its position and shape drawn
by torchvision's RandomErasing.get_params. timm erases after normalization with
zeros (`const`) or per-pixel N(0, 1) noise (`pixel`); on the uint8 image that is
the data set's mean colour, or per-pixel N(mean, std) noise clipped to 0-255.

Those implementations draw from torch's global generator. Here each example's
draws come from its own key (seed, epoch, index), through a forked generator:
the same image in any loader worker, rank or world size, after any resume, and
the global generator is left as it was.
"""

import functools
import random
from dataclasses import dataclass

import torch

from bigbatch.trainer.data.decode import IMAGENET_MEAN, IMAGENET_STD

POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")
ERASING_MODES = ("pixel", "const")


@functools.lru_cache(maxsize=8)
def _policy(name: str, num_ops: int, magnitude: int):
    from torchvision.transforms import v2

    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    if name == "randaugment":
        return v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    return v2.TrivialAugmentWide()


@dataclass(frozen=True)
class Augment:
    policy: str = "none"
    num_ops: int = 2
    magnitude: int = 9
    erasing: float = 0.0
    erasing_mode: str = "pixel"

    def __bool__(self) -> bool:
        return self.policy != "none" or self.erasing > 0

    def __call__(self, image: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """`image`: uint8 CHW (RGB); `rng`: the example's own generator (after its crop and flip draws)."""
        if not self:
            return image
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.getrandbits(63))
            if self.policy != "none":
                image = _policy(self.policy, self.num_ops, self.magnitude)(image)
            if self.erasing and torch.rand(()).item() < self.erasing:
                image = self._erase(image)
        return image

    def _erase(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import RandomErasing

        top, left, h, w, _ = RandomErasing.get_params(image, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), value=[0])
        if (h, w) == tuple(image.shape[-2:]):  # no box fitted in 10 tries: torchvision leaves the image as it is
            return image
        channels = image.shape[0]
        mean = torch.tensor(IMAGENET_MEAN[:channels]).view(-1, 1, 1) * 255
        if self.erasing_mode == "const":
            fill = mean.expand(channels, h, w)
        else:
            std = torch.tensor(IMAGENET_STD[:channels]).view(-1, 1, 1) * 255
            fill = torch.randn(channels, h, w) * std + mean
        image = image.clone()
        image[:, top:top + h, left:left + w] = fill.round().clamp(0, 255).to(torch.uint8)
        return image


def augment_of(cfg) -> Augment:
    """The recipe's data section as an Augment (pickled into loader workers with the data set)."""
    return Augment(cfg.augment, cfg.randaugment_ops, cfg.randaugment_magnitude, cfg.random_erasing,
                   cfg.random_erasing_mode)


NO_AUGMENT = Augment()
