"""The small-image ResNet's stem stride: same parameters, a quarter of the multiply-adds at stride 2."""

import functools

import pytest
import torch

from bigbatch.trainer.models.complexity import measure
from bigbatch.trainer.models.small_resnet import resnet_small


def test_a_stride_2_stem_keeps_the_parameters_and_quarters_the_work():
    full = measure(functools.partial(resnet_small, widths=[16, 32, 64]), 10, 1, 28)
    strided = measure(functools.partial(resnet_small, widths=[16, 32, 64], stem_stride=2), 10, 1, 28)
    assert strided[0] == full[0]
    # every conv after the stem sees half the rows and columns: 4x fewer MACs (ceil at odd sizes: within 20%)
    assert 0.2 < strided[1] / full[1] < 0.3
    model = resnet_small(10, in_chans=1, widths=[16, 32, 64], stem_stride=2)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_other_stem_strides_are_refused():
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        resnet_small(10, stem_stride=3)
