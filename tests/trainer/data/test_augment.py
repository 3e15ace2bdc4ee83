"""data.augment and data.random_erasing: torchvision's policies and Random Erasing, drawn per example."""

import random

import pytest
import torch

from bigbatch.trainer.data.augment import Augment
from bigbatch.trainer.data.decode import IMAGENET_MEAN
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.images import write_jpeg_folder


def image(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_each_policy_is_torchvisions_drawn_from_the_examples_key_and_leaves_the_global_generator(policy):
    from torchvision.transforms import v2

    ops = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
           "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
           "trivialaugment": v2.TrivialAugmentWide}
    augment, img = Augment(policy), image()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    outs = [augment(img, random.Random(f"0:1:{index}")) for index in range(12)]
    assert torch.equal(torch.get_rng_state(), before)  # forked: the global generator is untouched
    assert all(torch.equal(out, augment(img, random.Random(f"0:1:{i}"))) for i, out in enumerate(outs))
    assert len({out.numpy().tobytes() for out in outs}) > 6  # different examples, different draws
    for index, out in enumerate(outs):  # the definition: torchvision's op with torch seeded from the key
        torch.manual_seed(random.Random(f"0:1:{index}").getrandbits(63))
        assert torch.equal(out, ops[policy]()(img))


@pytest.mark.parametrize("mode", ["const", "pixel"])
def test_random_erasing_erases_one_box_of_2_to_33_percent_with_aspect_0_3_to_3_3(mode):
    augment, img = Augment(erasing=1.0, erasing_mode=mode), torch.full((3, 60, 80), 7, dtype=torch.uint8)
    mean = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8)
    for index in range(60):
        out = augment(img, random.Random(f"0:0:{index}"))
        changed = (out != img).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].float().mean() > 0.95  # one rectangle
        assert 0.02 * 4800 - 2 * (h + w) <= h * w <= 4800 / 3 + 2 * (h + w)  # rounded to whole pixels
        assert 0.3 - 0.05 <= h / w <= 1 / 0.3 + 0.5
        box = out[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        if mode == "const":
            assert torch.equal(box, mean.view(3, 1, 1).expand_as(box))
        else:  # per-pixel N(mean, std) in pixel space
            assert abs(box.float().mean(dim=(1, 2)) - mean.float()).max() < 40 and box.float().std() > 30
    hits = sum(not torch.equal(Augment(erasing=0.25)(img, random.Random(f"1:0:{i}")), img) for i in range(400))
    assert 70 <= hits <= 130  # 100 expected, std 8.7


def test_a_folder_run_with_trivialaugment_and_erasing_trains_and_in_memory_data_is_refused(tiny, tmp_path):
    root = write_jpeg_folder(tmp_path / "data")
    recipe = load_recipe(tiny, ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                                "model.name=resnet_small", "train.epochs=1", "data.augment=trivialaugment",
                                "data.random_erasing=0.5"])
    summary = Trainer(recipe, tmp_path / "run", LocalCollective()).fit()
    assert summary["step"] == 3 and summary["top1"] is not None
    train = Trainer(recipe, tmp_path / "again", LocalCollective()).parts.data.train
    assert torch.equal(train[(0, 5)][0], train[(0, 5)][0]) and not torch.equal(train[(0, 5)][0], train[(1, 5)][0])
    with pytest.raises(RecipeError, match="data.augment: works on decoded images"):
        load_recipe(tiny, ["data.augment=autoaugment"])
