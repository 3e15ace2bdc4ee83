"""NASNet-A Mobile: complexity against the paper, cell data invariants, widths, forward/backward, options."""

import pytest
import torch
import torch.nn as nn

import bigbatch.trainer.models.nasnet as nas
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.models.complexity import count_macs, count_params
from bigbatch.trainer.models.darts import FactorizedReduce
from bigbatch.trainer.models.registry import create_model, get_entry
from tests.model_checks import assert_trains

# Zoph et al. 2018, Table 2, NASNet-A (4 @ 1056): 5.3M parameters, 564M multiply-adds at 224 px.
PAPER_PARAMS = 5.3e6
PAPER_MACS = 564e6


def _meta(**kwargs) -> nn.Module:
    with torch.device("meta"):
        return nas.nasnet_a_mobile(**kwargs)


def test_complexity_matches_table_2() -> None:
    model = _meta()
    params = count_params(model)
    assert params == pytest.approx(PAPER_PARAMS, rel=0.01)
    assert params == 5_289_978  # the Keras / pretrainedmodels ports of the TF-slim model: same count
    assert count_macs(model, 3, 224) == pytest.approx(PAPER_MACS, rel=0.03)


def test_registry_entry() -> None:
    entry = get_entry("nasnet_a_mobile")
    assert entry.family == "nas" and entry.builder is nas.nasnet_a_mobile
    assert entry.published is not None and entry.published.params_m == 5.3 and entry.published.macs_m == 564


def test_cell_widths_and_resolutions_follow_the_reference() -> None:
    model = _meta()
    # stem cells (F/4, F/2 filters x 4 blocks), then 4 normal (6 x 44), reduction (4 x 88), 4 normal (6 x 88),
    # reduction (4 x 176), 4 normal (6 x 176 = 1056): TF-slim's mobile_imagenet_config.
    widths = [44, 88] + [264] * 4 + [352] + [528] * 4 + [704] + [1056] * 4
    assert [cell.out_channels for cell in model.cells] == widths
    assert model.num_features == 1056 and model.classifier.in_features == 1056
    # h_{i-1} is factorized-reduced exactly where it is at twice the resolution: the second stem cell and the
    # first normal cell after every reduction (the first stem cell reads the stem conv raw).
    reduced = [i for i, cell in enumerate(model.cells) if isinstance(cell.pre_older, FactorizedReduce)]
    assert reduced == [1, 2, 7, 12]
    assert isinstance(model.cells[0].pre_older, nn.Identity)
    with torch.device("meta"):
        older, newer = None, model.stem(torch.zeros(1, 3, 224, 224))
        assert newer.shape[-1] == 111
        sizes = []
        for cell in model.cells:
            older, newer = newer, cell(older, newer)
            sizes.append(newer.shape[-1])
    assert sizes == [56, 28] + [28] * 4 + [14] * 5 + [7] * 5


@pytest.mark.parametrize("spec", [nas.NORMAL_CELL, nas.REDUCTION_CELL], ids=["normal", "reduction"])
def test_cell_data_invariants(spec: nas.CellSpec) -> None:
    spec.check()
    assert len(spec.blocks) == 5 and all(len(block) == 2 for block in spec.blocks)
    for b, block in enumerate(spec.blocks):
        for op, index in block:
            assert op in nas.OP_NAMES
            assert 0 <= index < 2 + b  # only the two cell inputs and earlier blocks
    read = {index for block in spec.blocks for _, index in block}
    assert all(i in read or i in spec.concat for i in range(2, 7))  # no dead block


def test_cells_match_figure_4_op_sets() -> None:
    normal_ops = {op for block in nas.NORMAL_CELL.blocks for op, _ in block}
    reduction_ops = {op for block in nas.REDUCTION_CELL.blocks for op, _ in block}
    assert normal_ops == {"sep_3x3", "sep_5x5", "avg_3x3", "identity"}
    assert reduction_ops == {"sep_3x3", "sep_5x5", "sep_7x7", "avg_3x3", "max_3x3", "identity"}
    assert all(index < 2 for block in nas.NORMAL_CELL.blocks for _, index in block)  # normal: inputs only
    assert nas.NORMAL_CELL.concat == (0, 2, 3, 4, 5, 6) and nas.REDUCTION_CELL.concat == (3, 4, 5, 6)


_OK_BLOCK = (("sep_3x3", 0), ("sep_3x3", 1))


@pytest.mark.parametrize(("blocks", "concat", "needle"), [
    (((("sep_3x3", 2), ("sep_3x3", 0)),), (2,), "not an earlier state"),  # block 0 reads itself
    (((("conv_3x3", 0), ("sep_3x3", 1)),), (2,), "unknown op"),
    ((_OK_BLOCK, (("avg_3x3", 1), ("identity", 0))), (3,), "neither read nor"),  # block 0 dead
    ((_OK_BLOCK,), (2, 2), "distinct"),
    ((_OK_BLOCK,), (3,), "states are 0..2"),
])
def test_cell_check_rejects_bad_data(blocks: tuple, concat: tuple, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        nas.CellSpec(blocks, concat).check()


def test_forward_backward_96px() -> None:
    torch.manual_seed(0)
    model = create_model("nasnet_a_mobile", num_classes=10, image_size=96)
    assert_trains(model, torch.randn(2, 3, 96, 96), 10)


def test_forward_backward_32px_one_channel_with_drop_path() -> None:
    torch.manual_seed(0)
    model = nas.nasnet_a_mobile(num_classes=5, in_chans=1, image_size=32, drop_path=0.3, dropout=0.0)
    assert model.drop_path_prob == 0.3
    assert_trains(model, torch.randn(2, 1, 32, 32), 5)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no drop-path nor dropout in eval mode


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"drop_path": 1.0}, "model.kwargs.drop_path: expected a probability"),
    ({"dropout": -0.1}, "model.kwargs.dropout: expected a probability"),
    ({"dropout": "high"}, "model.kwargs.dropout: expected a probability"),
    ({"layers": 3}, "model.kwargs: nasnet_a_mobile:"),
])
def test_bad_kwargs_raise_recipe_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(RecipeError) as info:
        create_model("nasnet_a_mobile", num_classes=10, image_size=32, **kwargs)
    assert str(info.value).startswith(needle)


def test_the_auxiliary_head_follows_tf_slim_and_trains_with_the_weighted_loss() -> None:
    from bigbatch.trainer.run.build import AuxiliaryLoss

    model = nas.nasnet_a_mobile(num_classes=10, image_size=224, auxiliary=True)
    # after the last normal cell of the second stack (cells: 2 stem, 4 normal, reduction, 4 normal, ...): 14 x 14
    # at 224 px, avg-pooled 5x5 / 3 to 4 x 4, so the 768-channel conv has a 4 x 4 kernel and leaves 1 x 1
    assert model.aux_after == 10 and model.aux_head[5].kernel_size == (4, 4)
    assert model.aux_head[2].in_channels == model.cells[10].out_channels
    model = nas.nasnet_a_mobile(num_classes=10, image_size=96, auxiliary=True)  # 6 x 6 -> 1 x 1: a 1 x 1 kernel
    assert model.aux_head[5].kernel_size == (1, 1)
    x, y = torch.randn(2, 3, 96, 96), torch.tensor([1, 7])
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 10)
    AuxiliaryLoss(torch.nn.CrossEntropyLoss(), 0.4)((logits, aux), y).backward()
    assert all(p.grad is not None for p in model.aux_head.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)  # evaluation: the logits alone
    small = nas.nasnet_a_mobile(num_classes=10, in_chans=1, image_size=32, auxiliary=True)  # a 2x2 map: no pool
    assert isinstance(small.aux_head[1], torch.nn.Identity) and small(torch.randn(2, 1, 32, 32))[1].shape == (2, 10)
