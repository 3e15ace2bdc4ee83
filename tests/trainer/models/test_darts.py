"""DARTS networks from genotypes given as data: published sizes, genotype validation, forward/backward."""

import pytest
import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.complexity import count_macs, count_params
from bigbatch.trainer.models.darts import (
    DARTS_V2,
    Cell,
    NetworkCIFAR,
    NetworkImageNet,
    darts,
    darts_v2_cifar,
    darts_v2_imagenet,
    parse_genotype,
)
from bigbatch.trainer.models.registry import create_model

WHERE = "model.kwargs.genotype"
V2_STRING = ("sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:1 skip_connect:0 "
             "skip_connect:0 dil_conv_3x3:2 | max_pool_3x3:0 max_pool_3x3:1 skip_connect:2 max_pool_3x3:1 "
             "max_pool_3x3:0 skip_connect:2 skip_connect:2 max_pool_3x3:1")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- published sizes

def test_darts_v2_cifar_params_match_table_1():
    with torch.device("meta"):
        model = darts_v2_cifar(num_classes=10, image_size=32)
        with_aux = NetworkCIFAR(parse_genotype(DARTS_V2, WHERE), 10, auxiliary=True)
    params = count_params(model)
    # Liu et al. 2019, Table 1: 3.3M, given to 0.1M, auxiliary head excluded. The network (like the authors'
    # code) has 3,349,342: +1.5%, inside the rounding of the published figure (+-0.05M) but not within 1%.
    assert abs(params - 3.3e6) <= 0.05e6, params
    assert count_params(with_aux) > params + 0.4e6  # the auxiliary head is not in the published count


def test_darts_v2_imagenet_params_match_table_3():
    with torch.device("meta"):
        model = darts_v2_imagenet(num_classes=1000)
    assert count_params(model) == pytest.approx(4.7e6, rel=0.01)  # Table 3, with the 1000-way FC layer


@pytest.mark.xfail(strict=True, reason="574M not reproduced: convs + FC give 529.9M (-7.7%), the same as the "
                                       "authors' code; see quark0/darts issue #46 (523M / 544.6M)")
def test_darts_v2_imagenet_macs_match_table_3():
    with torch.device("meta"):
        model = darts_v2_imagenet(num_classes=1000)
    assert count_macs(model, 3, 224) == pytest.approx(574e6, rel=0.03)


def test_darts_v2_imagenet_macs_fall_short_of_table_3_by_the_known_gap():
    with torch.device("meta"):
        model = darts_v2_imagenet(num_classes=1000)
    # Counting only conv and FC products (our convention) lands 7-8% under the published 574M.
    assert 0.90 * 574e6 < count_macs(model, 3, 224) < 574e6


# ---------------------------------------------------------------------------------------- genotype parsing

def test_dict_string_and_name_forms_give_the_same_network():
    from_dict = parse_genotype(DARTS_V2, WHERE)
    from_string = parse_genotype(V2_STRING, WHERE)
    per_cell_strings = parse_genotype({"normal": V2_STRING.split("|")[0], "reduce": V2_STRING.split("|")[1]}, WHERE)
    assert from_dict == from_string == per_cell_strings == parse_genotype("darts_v2", WHERE)
    assert parse_genotype(from_dict.compact(), WHERE) == from_dict
    with torch.device("meta"):
        a = NetworkCIFAR(from_dict, 10, init_channels=8, layers=5)
        b = darts(num_classes=10, genotype=V2_STRING, layers=5, init_channels=8)
    assert _shapes(a) == _shapes(b)


def _with_normal(normal: list) -> dict:
    return {**DARTS_V2, "normal": normal}


@pytest.mark.parametrize("genotype, expected", [
    (_with_normal([*DARTS_V2["normal"][:3], ["sep_conv_4x4", 1], *DARTS_V2["normal"][4:]]),
     f"{WHERE}.normal[3]: unknown op 'sep_conv_4x4'"),
    (_with_normal([*DARTS_V2["normal"][:5], ["none", 0], *DARTS_V2["normal"][6:]]), f"{WHERE}.normal[5]: op 'none'"),
    (_with_normal([*DARTS_V2["normal"][:4], ["sep_conv_3x3", 4], *DARTS_V2["normal"][5:]]),
     f"{WHERE}.normal[4]: input 4 of node 2"),
    (_with_normal([*DARTS_V2["normal"][:2], ["sep_conv_3x3", -1], *DARTS_V2["normal"][3:]]), f"{WHERE}.normal[2]"),
    (_with_normal(DARTS_V2["normal"][:7]), f"{WHERE}.normal: 7 entries, an odd number"),
    (_with_normal([*DARTS_V2["normal"][:6], ["skip_connect"], ["dil_conv_3x3", 2]]), f"{WHERE}.normal[6]"),
    ({**DARTS_V2, "reduce_concat": [2, 3, 6]}, f"{WHERE}.reduce_concat[2]"),
    ({**DARTS_V2, "reduction": []}, f"{WHERE}: unknown key 'reduction'"),
    (V2_STRING.replace("max_pool_3x3:1", "max_pool_3x3:9", 1), f"{WHERE}.reduce[1]: input 9 of node 0"),
    (V2_STRING.replace("skip_connect:0", "skip_connect_0", 1), f"{WHERE}.normal[5]: cannot read"),
])
def test_bad_genotype_names_the_position(genotype: object, expected: str):
    with pytest.raises(RecipeError) as info:
        parse_genotype(genotype, WHERE)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_bad_kwargs_through_the_registry_are_recipe_errors():
    with pytest.raises(RecipeError, match=r"genotype\.normal\[0\]"):
        create_model("darts", 10, genotype=_with_normal([["conv_3x3", 0], *DARTS_V2["normal"][1:]]))
    with pytest.raises(RecipeError, match="setting"):
        create_model("darts", 10, setting="mobile")
    with pytest.raises(RecipeError, match="init_channels"):
        create_model("darts", 10, init_channels=7)
    with pytest.raises(RecipeError, match="model.kwargs"):
        create_model("darts_v2_cifar", 10, auxilary=True)  # misspelt


# ---------------------------------------------------------------------------------------- running it

def _small(drop_path: float = 0.0) -> NetworkCIFAR:
    torch.manual_seed(0)
    return NetworkCIFAR(parse_genotype(DARTS_V2, WHERE), 10, init_channels=8, layers=5, drop_path=drop_path)


def test_forward_backward_on_a_small_batch():
    model = _small().train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    logits = model(x)
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_drop_path_is_random_in_training_only():
    model, x = _small(drop_path=0.3), torch.randn(2, 3, 32, 32)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = _small().train()
    assert torch.equal(plain(x), plain(x))  # training-mode BN alone is deterministic


def test_auxiliary_head_runs_only_through_forward_with_aux():
    model = NetworkCIFAR(parse_genotype(DARTS_V2, WHERE), 10, init_channels=8, layers=5, auxiliary=True).train()
    logits, aux = model.forward_with_aux(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    assert model.eval().forward_with_aux(torch.randn(2, 3, 32, 32))[1] is None


@pytest.mark.parametrize("size, expected", [(16, 8), (7, 4)])
def test_reduction_cell_halves_the_resolution(size: int, expected: int):
    cell = Cell(parse_genotype(DARTS_V2, WHERE), 12, 12, 8, reduction=True, reduction_prev=False)
    out = cell(torch.randn(2, 12, size, size), torch.randn(2, 12, size, size))
    assert out.shape == (2, 4 * 8, expected, expected)


def _last_cell_shape(model: nn.Module, size: int) -> tuple[int, ...]:
    shapes = []
    model.cells[-1].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    assert out.shape == (1, model.classifier.out_features)
    return shapes[0]


def test_network_output_resolution():
    g = parse_genotype(DARTS_V2, WHERE)
    with torch.device("meta"):
        cifar, imagenet = NetworkCIFAR(g, 10), NetworkImageNet(g, 1000)
    assert _last_cell_shape(cifar, 32) == (1, 4 * 4 * 36, 8, 8)  # two reductions: 32 -> 8
    assert _last_cell_shape(imagenet, 224) == (1, 4 * 4 * 48, 7, 7)  # stems /8, two reductions: 224 -> 7
    assert [i for i, c in enumerate(cifar.cells) if c.reduction] == [6, 13]
    assert [i for i, c in enumerate(imagenet.cells) if c.reduction] == [4, 9]


def _auxiliary_under_ddp(rank: int, world: int, recipe_path: str, run_root: str) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective
    from bigbatch.trainer.recipe import load_recipe
    from bigbatch.trainer.run.loop import Trainer

    recipe = load_recipe(recipe_path, ["model.kwargs.auxiliary=true", "model.kwargs.layers=3", "cluster.backend=torch", "cluster.workers=2", "data.image_size=32",
                                       "data.batch_size=16", "train.max_steps=3", "train.eval_every_epochs=0",
                                       "train.threads=1"])
    trainer = Trainer(recipe, run_root, TorchDistributedCollective("cpu"))
    head = {k: v.clone() for k, v in trainer.model.auxiliary_head.state_dict().items()}
    summary = trainer.fit()  # DDP refuses a second step if the head's parameters go unused
    assert summary["step"] == 3
    after = trainer.model.auxiliary_head.state_dict()
    assert any(not torch.equal(head[k], after[k]) for k in head if after[k].is_floating_point())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_auxiliary_head_trains_under_ddp(tmp_path):
    from pathlib import Path

    from tests.gloo import spawn_gloo

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "digits_darts.yaml"
    spawn_gloo(_auxiliary_under_ddp, 2, str(recipe), str(tmp_path / "run"))


def test_auxiliary_loss_adds_the_weighted_head_loss():
    from bigbatch.trainer.run.build import AuxiliaryLoss

    logits, aux, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    ce = torch.nn.functional.cross_entropy
    loss = AuxiliaryLoss(torch.nn.CrossEntropyLoss(), 0.4)
    torch.testing.assert_close(loss((logits, aux), y), ce(logits, y) + 0.4 * ce(aux, y))
    torch.testing.assert_close(loss(logits, y), ce(logits, y))
