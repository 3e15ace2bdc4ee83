"""Block-string networks: timm's own models rebuilt from strings, every malformed token, a small net trains."""

import re

import pytest
import timm
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.block_string import blocks_model, parse_blocks
from bigbatch.trainer.models.complexity import count_macs, count_params
from bigbatch.trainer.models.registry import create_model

# The architectures as their papers give them, in timm's notation (written here, not read from timm).
EFFICIENTNET_B0 = [["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"], ["ir_r2_k5_s2_e6_c40_se0.25"],
                   ["ir_r3_k3_s2_e6_c80_se0.25"], ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
                   ["ir_r1_k3_s1_e6_c320_se0.25"]]
MNASNET_A1 = [["ds_r1_k3_s1_e1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k5_s2_e3_c40_se0.25"],
              ["ir_r4_k3_s2_e6_c80"], ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
              ["ir_r1_k3_s1_e6_c320"]]
MNASNET_B1 = [["ds_r1_k3_s1_c16_noskip"], ["ir_r3_k3_s2_e3_c24"], ["ir_r3_k5_s2_e3_c40"], ["ir_r3_k5_s2_e6_c80"],
              ["ir_r2_k3_s1_e6_c96"], ["ir_r4_k5_s2_e6_c192"], ["ir_r1_k3_s1_e6_c320_noskip"]]
MOBILENET_V2 = [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"], ["ir_r4_k3_s2_e6_c64"],
                ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"], ["ir_r1_k3_s1_e6_c320"]]


def _counts(model: nn.Module) -> tuple[int, int]:
    return count_params(model), count_macs(model, 3, 224)


def test_efficientnet_b0_strings_give_timms_efficientnet_b0_exactly():
    with torch.device("meta"):
        ours = blocks_model(blocks=EFFICIENTNET_B0)
        reference = timm.create_model("efficientnet_b0")
    assert _counts(ours) == _counts(reference)
    assert count_params(ours) == 5_288_548  # timm's 5.29M
    assert count_macs(ours, 3, 224) == pytest.approx(386e6, rel=0.01)  # the paper's 0.39B FLOPs


# timm's mnasnet_100 is MnasNet-B1 (no squeeze-excite); MnasNet-A1 (with SE) is semnasnet_100.
@pytest.mark.parametrize("blocks, act, timm_name", [(MNASNET_A1, "relu", "semnasnet_100"),
                                                    (MNASNET_B1, "relu", "mnasnet_100"),
                                                    (MOBILENET_V2, "relu6", "mobilenetv2_100")],
                         ids=["mnasnet_a1", "mnasnet_b1", "mobilenet_v2"])
def test_other_strings_reproduce_timms_models(blocks, act, timm_name):
    with torch.device("meta"):
        ours = blocks_model(blocks=blocks, act=act)
        reference = timm.create_model(timm_name)
    assert _counts(ours) == _counts(reference)


def test_multipliers_scale_as_timms_efficientnet_b2():
    with torch.device("meta"):
        ours = blocks_model(blocks=EFFICIENTNET_B0, channel_multiplier=1.1, depth_multiplier=1.2)
        reference = timm.create_model("efficientnet_b2")
    assert _counts(ours) == _counts(reference)


def test_without_blocks_the_entry_is_efficientnet_b0():
    with torch.device("meta"):
        assert count_params(create_model("blocks", 1000)) == 5_288_548


BAD_STRINGS = [
    ("ir_r2_k3_q2_e6_c24", "unknown option 'q2' at token 4 (expected r<repeats>"),
    ("xx_r2_k3_s2_c24", "unknown block type 'xx' at token 1 (expected one of ds, dsa, ir, er, cn)"),
    ("ir_r2_k3_s3_e6_c24", "bad value '3' for option 's' at token 4 (expected stride 1 or 2)"),
    ("ir_r2_k3_s2_e6", "missing option 'c' after token 5 (expected e.g. c24"),
    ("ir_r2_k3_s2_c24", "missing option 'e' after token 5 (expected e.g. e6"),
    ("ir_k3_s2_e6_c24", "missing option 'r' after token 5"),
    ("ir_rx_k3_s2_e6_c24", "bad value 'x' for option 'r' at token 2 (expected a whole number)"),
    ("ir_r2.5_k3_s2_e6_c24", "bad value '2.5' for option 'r' at token 2 (expected a whole number)"),
    ("ir_r0_k3_s2_e6_c24", "bad value '0' for option 'r' at token 2 (expected a whole number of at least 1)"),
    ("ir_r2_k3_s_e6_c24", "option 's' has no value at token 4 (expected e.g. s2)"),
    ("ir_r2_k4_s2_e6_c24", "bad value '4' for option 'k' at token 3 (expected odd kernel sizes"),
    ("ir_r2_k3_s2_e6_c24_se2", "bad value '2' for option 'se' at token 7 (expected a ratio between 0 and 1)"),
    ("ir_r2_k3_s2_e0_c24", "bad value '0' for option 'e' at token 5 (expected an expansion ratio above 0)"),
    ("ir_r2_k3_s2_e6_c24_nxx", "unknown activation 'nxx' at token 7 (expected one of nre, nr6, nhs, nsw, nmi)"),
    ("ir_r2_r3_k3_s2_e6_c24", "option 'r3' at token 3 repeats the 'r' already given at token 2"),
    ("ir__r2_k3_s2_e6_c24", "empty token at token 2"),
    ("cn_r1_k3_s1_c24_se0.25", "option 'se0.25' does not apply to cn blocks at token 6"),
    ("ir_r1_k3_s1_e6_c24_skip", "option 'skip' does not apply to ir blocks at token 7"),
    ("ds_r1_k3_s1_e6_c24", "'e6' at token 5: ds blocks have no expansion"),
    ("cn_r1_k3.5_s1_c24", "'k3.5' at token 3: cn blocks take one kernel size"),
]


@pytest.mark.parametrize("text, message", BAD_STRINGS, ids=[t for t, _ in BAD_STRINGS])
def test_each_malformed_string_names_key_string_token_and_position(text, message):
    expected = f"model.kwargs.blocks[1][0]: {text!r}: {message}"
    with pytest.raises(RecipeError, match=re.escape(expected)) as info:
        parse_blocks([["ds_r1_k3_s1_c16"], [text]])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("blocks, message", [
    ("ir_r1_k3_s1_e6_c16", "model.kwargs.blocks: expected a non-empty list of stages"),
    ([], "model.kwargs.blocks: expected a non-empty list of stages"),
    ([["ds_r1_k3_s1_c16"], "ir_r1_k3_s2_e6_c24"], "model.kwargs.blocks[1]: expected a list of block strings, "
                                                  "got the string 'ir_r1_k3_s2_e6_c24'"),
    ([["ds_r1_k3_s1_c16"], []], "model.kwargs.blocks[1]: expected a non-empty list of block strings"),
    ([["ds_r1_k3_s1_c16", 5]], "model.kwargs.blocks[0][1]: expected a block string"),
    ([["ir_r1_k3_s2_e6_c24", "ir_r2_k3_s2_e6_c24"]],
     "model.kwargs.blocks[0][1]: 'ir_r2_k3_s2_e6_c24': stride 2 at token 4 on a block string that is not the "
     "first of its stage"),
])
def test_malformed_structure(blocks, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        parse_blocks(blocks)


@pytest.mark.parametrize("kwargs, message", [
    ({"act": "tanhh"}, "model.kwargs.act: unknown activation 'tanhh'"),
    ({"stem_stride": 3}, "model.kwargs.stem_stride: expected 1 or 2"),
    ({"channel_multiplier": 0}, "model.kwargs.channel_multiplier: expected a number > 0"),
    ({"drop_path_rate": 1.5}, "model.kwargs.drop_path_rate: expected a number >= 0 and < 1"),
    ({"stem_size": 8.5}, "model.kwargs.stem_size: expected an integer >= 1"),
    ({"blocks_typo": []}, "model.kwargs: blocks: got an unexpected keyword argument 'blocks_typo'"),
])
def test_bad_keyword_arguments(kwargs, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        create_model("blocks", 10, blocks=[["ds_r1_k3_s1_c16"]], **kwargs)


SMALL = [["ds_r1_k3_s1_c8"], ["ir_r2_k3.5_s2_e3_c16_se0.25_nre"], ["er_r1_k3_s2_e2_c24", "cn_r1_k3_s1_c24_skip"]]


@pytest.mark.parametrize("stem_stride, final_size", [(2, 4), (1, 8)])
def test_small_network_trains_a_step(stem_stride, final_size):
    torch.manual_seed(0)
    model = create_model("blocks", 10, image_size=32, blocks=SMALL, stem_size=8, num_features=64,
                         stem_stride=stem_stride)
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == final_size
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    grads = [p.grad for p in model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
