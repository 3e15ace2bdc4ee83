"""ProxylessNAS (Cai et al. 2019, "ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware",
ICLR 2019, arXiv:1812.00332): the searched Mobile and GPU networks, written as timm block strings (data) and
built by `build_block_network` (trainer/models/block_string.py).

The authors release each network as a JSON net config (mit-han-lab/proxylessnas `proxyless_nas/model_zoo.py`
downloads `proxyless_mobile.config` / `proxyless_gpu.config`): a 3x3 stride-2 conv stem, then 22
MobileInvertedResidualBlocks (a fixed first one and 21 searched; 20 real in Mobile, 14 in GPU), each an MBInvertedConvLayer (1x1 expansion unless the ratio is 1, kxk
depthwise, linear 1x1 projection; BN after every conv, ReLU6 after the first two) or a ZeroLayer, with an
identity shortcut on every stride-1 block that keeps its width; then a 1x1 `feature_mix_layer` (BN, ReLU6),
global average pooling and a LinearLayer `classifier` (dropout before it). Transcribed here:

- blocks: an MBConv with expansion 1 is timm's `ds` (dw kxk, BN, act, pw 1x1, BN; no skip, as its width
  changes); the others are `ir` with the config's kernel `k` and `expand_ratio` `e` (the config's mid width,
  round(in x e), is a multiple of 8 in both networks, as timm's); a block whose op is a ZeroLayer with an
  identity shortcut computes x + 0 = x, so it is left out. Shortcuts need no token: timm adds one exactly where
  the authors do (stride 1, same width). Stages group blocks by output width, so a stride-2 block starts one.
- stem 32 (Mobile) / 40 (GPU) channels -> `stem_size`; feature_mix_layer 1280 / 1728 -> `num_features`
  (timm's conv_head + bn2 + act, then pooling and the classifier, in the authors' order); activation
  `relu6` everywhere (`act`), as every layer of the configs says.
- the configs' BatchNorm has eps 1e-3 (momentum 0.1, PyTorch's default): block strings cannot say so, so
  the built network's BatchNorm layers are set to eps 1e-3 afterwards.
- dropout before the classifier: the authors' training commands (mit-han-lab/proxylessnas search/README.md)
  use 0.1 for Mobile and 0.3 for GPU, the defaults here; no drop path (0 by default, passed through).

Sources of the block lists. The configs themselves are not in the authors' repository (downloaded at run
time); the same repository's ProxylessGaze release carries the Mobile network at width 0.3
(proxyless_gaze/.../pretrained/proxyless-w0.3-r176_imagenet.json: the same kernels, expansion ratios, zero
blocks and strides at scaled widths). osmr/imgclsmob (pytorchcv/models/proxylessnas.py) transcribes all four
configs as per-block lists. Built here, both networks reproduce the authors' training logs
(mit-han-lab/proxylessnas logs/imagenet_{mobile,gpu}_log.txt) exactly: Mobile 4,080,512 parameters ("Total
training params: 4.08M") and 320.43M multiply-adds ("Total FLOPs: 320.4M"; the authors' counter adds up conv
and linear multiply-adds, as ours); GPU 7,119,848 ("7.12M") and 465.26M ("465.3M").

Small images: with `image_size` <= 64 (or `small_input=True`) the stem has stride 1, as the project's other
from-paper builders do, so a 32-64 px input ends at 2x2 to 4x4 instead of 1x1 to 2x2.
"""

import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.block_string import build_block_network
from bigbatch.trainer.models.registry import Published, register

# ProxylessNAS-Mobile (the authors' proxyless_mobile config). Zero blocks left out: the 3rd and 4th of the
# 32-channel stage.
PROXYLESSNAS_MOBILE = (
    ("ds_r1_k3_s1_c16",),
    ("ir_r1_k5_s2_e3_c32", "ir_r1_k3_s1_e3_c32"),
    ("ir_r1_k7_s2_e3_c40", "ir_r1_k3_s1_e3_c40", "ir_r2_k5_s1_e3_c40"),
    ("ir_r1_k7_s2_e6_c80", "ir_r3_k5_s1_e3_c80"),
    ("ir_r1_k5_s1_e6_c96", "ir_r3_k5_s1_e3_c96"),
    ("ir_r2_k7_s2_e6_c192", "ir_r2_k7_s1_e3_c192"),
    ("ir_r1_k7_s1_e6_c320",),
)
# ProxylessNAS-GPU (the authors' proxyless_gpu config): shallower and wider. Zero blocks left out: the 2nd-4th
# of the 32-channel stage, the 2nd and 3rd of the 56- and of the 112-channel stage, the 2nd of the 128-channel
# stage.
PROXYLESSNAS_GPU = (
    ("ds_r1_k3_s1_c24",),
    ("ir_r1_k5_s2_e3_c32",),
    ("ir_r1_k7_s2_e3_c56", "ir_r1_k3_s1_e3_c56"),
    ("ir_r1_k7_s2_e6_c112", "ir_r1_k5_s1_e3_c112"),
    ("ir_r1_k5_s1_e6_c128", "ir_r1_k3_s1_e3_c128", "ir_r1_k5_s1_e3_c128"),
    ("ir_r3_k7_s2_e6_c256", "ir_r1_k5_s1_e6_c256"),
    ("ir_r1_k7_s1_e6_c432",),
)
# (blocks, stem channels, feature_mix_layer channels, the authors' classifier dropout)
NETWORKS = {"mobile": (PROXYLESSNAS_MOBILE, 32, 1280, 0.1), "gpu": (PROXYLESSNAS_GPU, 40, 1728, 0.3)}
ACT = "relu6"
BN_EPS = 1e-3  # the configs' "bn": {"momentum": 0.1, "eps": 0.001}
SMALL_INPUT_MAX = 64  # image_size at or below which the stem has stride 1

_LOGS = "mit-han-lab/proxylessnas (the authors' code release) logs/imagenet_{}_log.txt"


def build_proxylessnas(variant: str, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                       small_input: bool | None = None, drop_rate: float | None = None,
                       drop_path_rate: float = 0.0) -> nn.Module:
    """ProxylessNAS `variant` ('mobile' or 'gpu'); drop_rate None = the authors' classifier dropout."""
    if variant not in NETWORKS:
        raise RecipeError(f"model.kwargs.variant: unknown ProxylessNAS network {variant!r} "
                          f"(expected one of {', '.join(NETWORKS)})")
    if small_input is not None and not isinstance(small_input, bool):
        raise RecipeError(f"model.kwargs.small_input: expected true, false or null, got {small_input!r}")
    blocks, stem, features, authors_dropout = NETWORKS[variant]
    if small_input is None:
        small_input = image_size <= SMALL_INPUT_MAX
    model = build_block_network([list(stage) for stage in blocks], num_classes=num_classes, in_chans=in_chans,
                                stem_size=stem, num_features=features, act=ACT,
                                drop_rate=authors_dropout if drop_rate is None else drop_rate,
                                drop_path_rate=drop_path_rate, stem_stride=1 if small_input else 2)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = BN_EPS
    return model


@register("proxylessnas_mobile", "nas", "ProxylessNAS-Mobile (Cai et al. 2019), the authors' searched network",
          published=Published(params_m=4.08, macs_m=320.4, resolution=224, source=(
              f"{_LOGS.format('mobile')}: 'Total training params: 4.08M', 'Total FLOPs: 320.4M' (their "
              "counter: conv and linear multiply-adds); the paper (arXiv:1812.00332) gives no counts")))
def proxylessnas_mobile(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                        small_input: bool | None = None, drop_rate: float | None = None,
                        drop_path_rate: float = 0.0) -> nn.Module:
    """ProxylessNAS-Mobile: 32-channel stem, 1280-channel head, ReLU6; classifier dropout 0.1 unless
    `drop_rate` is given; image_size <= 64 selects the stride-1 stem."""
    return build_proxylessnas("mobile", num_classes, in_chans, image_size, small_input, drop_rate, drop_path_rate)


@register("proxylessnas_gpu", "nas", "ProxylessNAS-GPU (Cai et al. 2019), the authors' searched network",
          published=Published(params_m=7.12, macs_m=465.3, resolution=224, source=(
              f"{_LOGS.format('gpu')}: 'Total training params: 7.12M', 'Total FLOPs: 465.3M' (their "
              "counter: conv and linear multiply-adds); the paper (arXiv:1812.00332) gives no counts")))
def proxylessnas_gpu(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                     small_input: bool | None = None, drop_rate: float | None = None,
                     drop_path_rate: float = 0.0) -> nn.Module:
    """ProxylessNAS-GPU: 40-channel stem, 1728-channel head, ReLU6; classifier dropout 0.3 unless
    `drop_rate` is given; image_size <= 64 selects the stride-1 stem."""
    return build_proxylessnas("gpu", num_classes, in_chans, image_size, small_input, drop_rate, drop_path_rate)
