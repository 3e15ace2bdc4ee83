"""Small-image (28-32 px) variants of the main ImageNet families, for the small recipes.

ImageNet stems shrink 224 px by 4 before the first block; a 32 px image would be
8x8 there and 1x1 before the last stage. As in the CIFAR versions of these
papers, the variants keep the blocks and drop the early downsampling: the stem
has stride 1 (and no max-pool), and MobileNet v2 also runs its second stage at
stride 1, so 32 px ends at 4x4. Parameter counts are unchanged.
"""

import torch.nn as nn

from bigbatch.trainer.models.block_string import build_block_network
from bigbatch.trainer.models.registry import register

# MobileNet v2 (Sandler et al. 2018, Table 2) as block strings; the second stage at stride 1 for small images.
MOBILENET_V2_SMALL = (("ds_r1_k3_s1_c16",), ("ir_r2_k3_s1_e6_c24",), ("ir_r3_k3_s2_e6_c32",),
                      ("ir_r4_k3_s2_e6_c64",), ("ir_r3_k3_s1_e6_c96",), ("ir_r3_k3_s2_e6_c160",),
                      ("ir_r1_k3_s1_e6_c320",))


@register("mobilenet_v2_small", "small", "MobileNet v2 1.0 for 28-32 px: stride-1 stem and second stage")
def mobilenet_v2_small(num_classes: int = 10, in_chans: int = 3, image_size: int = 32,
                       width: float = 1.0, drop_rate: float = 0.0) -> nn.Module:
    return build_block_network([list(stage) for stage in MOBILENET_V2_SMALL], num_classes=num_classes,
                               in_chans=in_chans, stem_size=32, num_features=1280, channel_multiplier=width,
                               act="relu6", drop_rate=drop_rate, stem_stride=1)


@register("shufflenet_v2_small", "small", "ShuffleNet v2 1.0x for 28-32 px: stride-1 stem, no max-pool")
def shufflenet_v2_small(num_classes: int = 10, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    import torchvision.models as tvm

    model = tvm.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    stem = model.conv1[0]
    model.conv1[0] = nn.Conv2d(in_chans, stem.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model
