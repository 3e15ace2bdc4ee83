"""Networks of the MobileNet / EfficientNet family written as timm block strings, so a recipe can train any
architecture a search found without new code.

A network is a list of stages, each a list of block strings such as `ir_r2_k3_s2_e6_c24_se0.25` (timm's
notation, `timm.models._efficientnet_builder._decode_block_str`). The first token is the block type:

- `ds`: depthwise-separable conv (dw kxk -> pw 1x1), `dsa`: the same with an activation after the pw conv
  and no skip; `ir`: inverted residual (MobileNetV2 / MnasNet / EfficientNet MBConv); `er`: edge residual
  (a full kxk expansion conv, EfficientNet-EdgeTPU); `cn`: plain conv-BN-act.

The other tokens, in any order:

- `r<int>` repeats, `k<int>` kernel (odd; `k3.5.7` mixes kernels across channel groups, MixNet-style),
  `s<1|2>` stride of the first repeat, `c<int>` output channels: required for every type;
- `e<float>` expansion ratio: required for `ir` and `er` (`ds`/`dsa` accept only `e1`, as timm's
  EfficientNet-B0 writes it); `se<float>` squeeze-excite ratio (of the block's input channels);
- `a<kernel>` expansion-conv kernel (`ir`), `p<kernel>` projection-conv kernel (`ir`, `ds`, `dsa`, `er`),
  `fc<int>` forced input channels (`er`), `cc<int>` CondConv experts (`ir`), `gs<int>` group size of the
  depthwise conv (0 = dense, 1 = depthwise);
- `nre` / `nr6` / `nhs` / `nsw` / `nmi`: the block's activation (ReLU, ReLU6, hard-swish, swish, mish)
  instead of the network's `act`; `noskip` drops the residual (`ir`, `ds`, `dsa`, `er`), `skip` adds one to
  a stride-1, same-width `cn` block.

timm's own decoder skips unknown tokens and asserts on others, so every string is checked here first, token
by token, and a mistake is a one-line RecipeError naming the recipe key, the string, the token and its
position. The blocks themselves are timm's (`decode_arch_def` + `EfficientNet`): the same module names and
counts as timm's `efficientnet_b0`, `mnasnet_100`, `mobilenetv2_100` for the same strings.
"""

import re
from dataclasses import dataclass
from functools import partial

import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.registry import register

BLOCK_TYPES = ("ds", "dsa", "ir", "er", "cn")
# EfficientNet-B0 (Tan & Le 2019, Table 1) in timm's notation: the default when a recipe gives no `blocks`.
EFFICIENTNET_B0 = (("ds_r1_k3_s1_e1_c16_se0.25",), ("ir_r2_k3_s2_e6_c24_se0.25",), ("ir_r2_k5_s2_e6_c40_se0.25",),
                   ("ir_r3_k3_s2_e6_c80_se0.25",), ("ir_r3_k5_s1_e6_c112_se0.25",), ("ir_r4_k5_s2_e6_c192_se0.25",),
                   ("ir_r1_k3_s1_e6_c320_se0.25",))
ACTIVATION_TOKENS = {"nre": "relu", "nr6": "relu6", "nhs": "hard_swish", "nsw": "swish", "nmi": "mish"}
NETWORK_ACTS = ("relu", "relu6", "swish", "silu", "hard_swish", "mish", "gelu")

# Value kinds: how each option's value is checked.
_INT = r"\d+"
_FLOAT = r"\d+(\.\d+)?"
_KERNEL = r"\d+(\.\d+)*"
_OPTION_KIND = {"r": "repeats", "k": "kernel", "s": "stride", "c": "channels", "e": "expansion",
                "se": "ratio", "a": "kernel", "p": "kernel", "fc": "channels", "cc": "experts", "gs": "group"}
_COMMON = ("r", "k", "s", "c", "gs")
_OPTIONS = {
    "ir": _COMMON + ("e", "se", "a", "p", "cc", "noskip"),
    "ds": _COMMON + ("e", "se", "p", "noskip"),
    "dsa": _COMMON + ("e", "se", "p", "noskip"),
    "er": _COMMON + ("e", "se", "p", "fc", "noskip"),
    "cn": _COMMON + ("skip",),
}
_REQUIRED = {"ir": ("r", "k", "s", "c", "e"), "er": ("r", "k", "s", "c", "e"), "ds": ("r", "k", "s", "c"),
             "dsa": ("r", "k", "s", "c"), "cn": ("r", "k", "s", "c")}
_EXAMPLE = {"r": "r2", "k": "k3", "s": "s2", "c": "c24", "e": "e6"}


@dataclass(frozen=True)
class ParsedBlock:
    """One checked block string: its type and its options (values as written)."""

    block_type: str
    options: dict[str, str]
    text: str


_HINT = {"r": "r<repeats>", "k": "k<kernel>", "s": "s<1|2>", "c": "c<channels>", "e": "e<ratio>",
         "se": "se<ratio>", "a": "a<kernel>", "p": "p<kernel>", "fc": "fc<channels>", "cc": "cc<experts>",
         "gs": "gs<group size>"}


def _expected(block_type: str) -> str:
    """The options a block type takes, for error messages."""
    return ", ".join([_HINT.get(o, o) for o in _OPTIONS[block_type]] + ["nre/nr6/nhs/nsw/nmi"])


def _check_value(key: str, value: str) -> str | None:
    """None when `value` suits option `key`, else what was expected."""
    kind = _OPTION_KIND[key]
    if kind == "kernel":
        if not re.fullmatch(_KERNEL, value):
            return "an odd kernel size such as 3 or 3.5.7"
        if any(int(k) % 2 == 0 for k in value.split(".")):
            return "odd kernel sizes (an even kernel would shift the feature map)"
        return None
    if kind in ("expansion", "ratio"):
        if not re.fullmatch(_FLOAT, value):
            return "a number such as 6 or 0.25"
        number = float(value)
        if kind == "expansion" and number <= 0:
            return "an expansion ratio above 0"
        if kind == "ratio" and number > 1:
            return "a ratio between 0 and 1"
        return None
    if not re.fullmatch(_INT, value):
        return "a whole number"
    number = int(value)
    if kind == "stride" and number not in (1, 2):
        return "stride 1 or 2"
    if kind in ("repeats", "channels", "experts") and number < 1:
        return "a whole number of at least 1"
    return None


def parse_block_string(text: object, where: str, first_in_stage: bool = True) -> ParsedBlock:
    """Check one block string token by token; RecipeError on the first problem (`where` is its recipe key)."""
    if not isinstance(text, str):
        raise RecipeError(f"{where}: expected a block string such as 'ir_r2_k3_s2_e6_c24', "
                          f"got {type(text).__name__} {text!r}")
    tokens = text.split("_")
    block_type = tokens[0]
    if block_type not in BLOCK_TYPES:
        raise RecipeError(f"{where}: {text!r}: unknown block type {block_type!r} at token 1 "
                          f"(expected one of {', '.join(BLOCK_TYPES)})")
    options: dict[str, str] = {}
    seen_at: dict[str, int] = {}
    for position, token in enumerate(tokens[1:], start=2):
        bad = f"{where}: {text!r}"
        if not token:
            raise RecipeError(f"{bad}: empty token at token {position} (expected {_expected(block_type)}; "
                              "tokens are separated by single underscores)")
        if token in ("skip", "noskip"):
            key, value = token, ""
        elif token.startswith("n"):
            if token not in ACTIVATION_TOKENS:
                raise RecipeError(f"{bad}: unknown activation {token!r} at token {position} "
                                  f"(expected one of {', '.join(ACTIVATION_TOKENS)})")
            key, value = "n", token
        else:  # the longest option name the token starts with ('se0.25' is se, 's2' is s), else unknown
            key = max((k for k in _OPTION_KIND if token.startswith(k)), key=len, default=token)
            value = token[len(key):]
        if key not in _OPTIONS[block_type] and key != "n":
            what = "option" if key in _OPTION_KIND or key in ("skip", "noskip") else "unknown option"
            where_ok = f" does not apply to {block_type} blocks" if what == "option" else ""
            raise RecipeError(f"{bad}: {what} {token!r}{where_ok} at token {position} "
                              f"(expected {_expected(block_type)})")
        if key in seen_at:
            raise RecipeError(f"{bad}: option {token!r} at token {position} repeats the "
                              f"{key!r} already given at token {seen_at[key]}")
        if key in _OPTION_KIND:
            if not value:
                raise RecipeError(f"{bad}: option {key!r} has no value at token {position} "
                                  f"(expected e.g. {_EXAMPLE.get(key, key + '1')})")
            problem = _check_value(key, value)
            if problem:
                raise RecipeError(f"{bad}: bad value {value!r} for option {key!r} at token {position} "
                                  f"(expected {problem})")
            if key == "e" and block_type in ("ds", "dsa") and float(value) != 1:
                raise RecipeError(f"{bad}: {token!r} at token {position}: {block_type} blocks have no "
                                  "expansion (expected e1 or no e; use an ir block to expand)")
            if key == "k" and block_type == "cn" and "." in value:
                raise RecipeError(f"{bad}: {token!r} at token {position}: cn blocks take one kernel size "
                                  "(expected e.g. k3)")
            if key == "s" and value == "2" and not first_in_stage:
                raise RecipeError(f"{bad}: stride 2 at token {position} on a block string that is not the "
                                  "first of its stage (expected s1: timm strides only a stage's first "
                                  "block; start a new stage to downsample)")
        seen_at[key] = position
        options[key] = value
    for key in _REQUIRED[block_type]:
        if key not in options:
            raise RecipeError(f"{where}: {text!r}: missing option {key!r} after token {len(tokens)} "
                              f"(expected e.g. {_EXAMPLE[key]}; {block_type} blocks need "
                              f"{', '.join(_REQUIRED[block_type])})")
    return ParsedBlock(block_type, options, text)


def parse_blocks(blocks: object, key: str = "model.kwargs.blocks") -> list[list[ParsedBlock]]:
    """Check a whole architecture (a list of stages, each a list of block strings) before timm sees it."""
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise RecipeError(f"{key}: expected a non-empty list of stages, each a list of block strings such as "
                          f"[['ds_r1_k3_s1_c16'], ['ir_r2_k3_s2_e6_c24']], got {blocks!r}")
    stages = []
    for i, stage in enumerate(blocks):
        if isinstance(stage, str):
            raise RecipeError(f"{key}[{i}]: expected a list of block strings, got the string {stage!r} "
                              f"(write [{stage!r}])")
        if not isinstance(stage, (list, tuple)) or not stage:
            raise RecipeError(f"{key}[{i}]: expected a non-empty list of block strings, got {stage!r}")
        stages.append([parse_block_string(text, f"{key}[{i}][{j}]", first_in_stage=j == 0)
                       for j, text in enumerate(stage)])
    return stages


def _number(key: str, value: object, low: float, high: float | None = None, integer: bool = False,
            low_open: bool = False, high_open: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and \
             (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low}" + \
                 ("" if high is None else f" and {'<' if high_open else '<='} {high}")
        raise RecipeError(f"model.kwargs.{key}: expected {'an integer' if integer else 'a number'} {bounds}, "
                          f"got {value!r}")


def build_block_network(blocks: list[list[str]], num_classes: int = 1000, in_chans: int = 3,
                        stem_size: int = 32, num_features: int = 1280, channel_multiplier: float = 1.0,
                        depth_multiplier: float = 1.0, act: str = "swish", drop_rate: float = 0.0,
                        drop_path_rate: float = 0.0, stem_stride: int = 2) -> nn.Module:
    """timm's EfficientNet built from checked block strings. Channels (stem, blocks, head) are scaled by
    `channel_multiplier` and rounded to multiples of 8 and repeats by `depth_multiplier` (ceil), as timm's
    `efficientnet_b*` do."""
    from timm.layers import get_act_layer
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.efficientnet import EfficientNet

    parse_blocks(blocks)
    _number("stem_size", stem_size, 1, integer=True)
    _number("num_features", num_features, 0, integer=True)
    _number("channel_multiplier", channel_multiplier, 0, low_open=True)
    _number("depth_multiplier", depth_multiplier, 0, low_open=True)
    _number("drop_rate", drop_rate, 0, 1, high_open=True)
    _number("drop_path_rate", drop_path_rate, 0, 1, high_open=True)
    if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
        raise RecipeError(f"model.kwargs.stem_stride: expected 1 or 2, got {stem_stride!r}")
    if act not in NETWORK_ACTS:
        raise RecipeError(f"model.kwargs.act: unknown activation {act!r} (expected one of "
                          f"{', '.join(NETWORK_ACTS)})")
    round_chs = partial(round_channels, multiplier=channel_multiplier)
    try:
        block_args = decode_arch_def([list(stage) for stage in blocks], depth_multiplier=depth_multiplier)
        model = EfficientNet(block_args, num_classes=num_classes, num_features=round_chs(num_features),
                             in_chans=in_chans, stem_size=stem_size, round_chs_fn=round_chs,
                             act_layer=get_act_layer(act), drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    except (AssertionError, ValueError, RuntimeError, KeyError, TypeError) as e:  # checked above; kept for safety
        detail = str(e) or f"{type(e).__name__} (e.g. channels that a gs group size does not divide)"
        raise RecipeError(f"model.kwargs.blocks: timm could not build this network: {detail}") from None
    if stem_stride == 1:  # same padding (1) for a 3x3 stem at either stride
        model.conv_stem.stride = (1, 1)
    return model


@register("blocks", "nas", "MobileNet/EfficientNet-family network from timm block strings (kwargs: blocks)")
def blocks_model(num_classes: int = 1000, in_chans: int = 3, image_size: int = 224,
                 blocks: list[list[str]] | None = None, stem_size: int = 32, num_features: int = 1280,
                 channel_multiplier: float = 1.0, depth_multiplier: float = 1.0, act: str = "swish",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, stem_stride: int = 2) -> nn.Module:
    """Any searched MobileNet-family network as data: `blocks` lists stages of timm block strings (module
    docstring); `act` is the default activation (swish as EfficientNet; relu for MnasNet, relu6 for
    MobileNetV2); `stem_stride=1` keeps small images (32 px) from shrinking to 1x1 too early. Without
    `blocks`, EfficientNet-B0's strings (so the entry builds with no kwargs, as catalogue entries do)."""
    return build_block_network([list(s) for s in EFFICIENTNET_B0] if blocks is None else blocks, num_classes=num_classes, in_chans=in_chans, stem_size=stem_size,
                               num_features=num_features, channel_multiplier=channel_multiplier,
                               depth_multiplier=depth_multiplier, act=act, drop_rate=drop_rate,
                               drop_path_rate=drop_path_rate, stem_stride=stem_stride)
