"""Decoding and augmentation of real JPEGs against references written from their definitions (PIL, full size)."""

import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from bigbatch.trainer.data.decode import (
    decode_eval,
    decode_train,
    normalize_batch,
    random_resized_crop_box,
    resized_crop,
)
from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.errors import TrainingFailed
from bigbatch.trainer.recipe import load_recipe
from bigbatch.trainer.run.loop import Trainer
from tests.images import sample_photos, write_jpeg_folder


def jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_random_resized_crop_boxes_follow_their_definition():
    rng = random.Random(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(375, 500, rng)
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        area = h * w / (375 * 500)
        assert 0.08 * 0.9 <= area <= 1.0 and 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


@pytest.mark.parametrize("seed", range(6))
def test_train_decode_matches_a_full_size_pil_reference(seed):
    photo = sample_photos()[0]
    data = jpeg(photo)
    out = decode_train(data, 64, random.Random(seed))
    rng = random.Random(seed)  # replay the same draws for the reference
    top, left, h, w = random_resized_crop_box(*photo.shape[:2], rng)
    flip = rng.random() < 0.5
    with Image.open(io.BytesIO(data)) as im:
        reference = im.convert("RGB").crop((left, top, left + w, top + h)).resize((64, 64), Image.BILINEAR,
                                                                                  reducing_gap=None)
    ref = torch.from_numpy(np.array(reference)).permute(2, 0, 1)
    ref = ref.flip(-1) if flip else ref
    assert out.dtype == torch.uint8 and out.shape == (3, 64, 64)
    # DCT-domain downscaling and a different resampler differ by a few levels, not by content
    assert (out.float() - ref.float()).abs().mean() < 8


@pytest.mark.parametrize("crop_pct", [224 / 256, 1.0, 0.95])  # the default, no margin, timm's newer 0.95
def test_eval_decode_is_resize_to_size_over_crop_pct_then_centre_crop(crop_pct):
    photo = sample_photos()[1]
    data = jpeg(photo)
    out = decode_eval(data, 56, crop_pct=crop_pct)
    short = round(56 / crop_pct)
    scale = short / min(photo.shape[:2])
    new_h, new_w = max(short, round(photo.shape[0] * scale)), max(short, round(photo.shape[1] * scale))
    with Image.open(io.BytesIO(data)) as im:
        resized = np.asarray(im.convert("RGB").resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - 56) // 2, (new_w - 56) // 2
    ref = torch.from_numpy(resized[top:top + 56, left:left + 56].copy()).permute(2, 0, 1)
    assert out.shape == (3, 56, 56) and (out.float() - ref.float()).abs().mean() < 8
    assert torch.equal(out, decode_eval(data, 56, crop_pct=crop_pct))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # lossless: the pixels are exactly the pattern
    return buffer.getvalue()


def pil_bilinear(array: np.ndarray, size: int) -> np.ndarray:
    """PIL's antialiased bilinear (the triangle filter widened by the shrink factor): torchvision's resize."""
    return np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR, reducing_gap=None), float)


def test_antialias_shrink_is_pils_filter_and_fast_aliases():
    # one-pixel black/white stripes shrunk 5x: a low-pass filter gives ~mid grey everywhere; a bilinear sample
    # without one lands on single stripes (0 or 255)
    stripes = np.zeros((460, 460, 3), np.uint8)
    stripes[:, 1::2] = 255
    box = (0, 0, 460, 460)
    smooth = resized_crop(png(stripes), box, 92, "antialias").permute(1, 2, 0).numpy()
    aliased = resized_crop(png(stripes), box, 92, "fast").permute(1, 2, 0).numpy()
    assert np.abs(smooth - pil_bilinear(stripes, 92)).max() <= 1
    assert np.abs(smooth - 127.5).max() < 30
    assert np.abs(aliased - 127.5).max() > 100


def test_antialias_shrink_of_a_photo_is_pils_resize():
    photo = np.ascontiguousarray(sample_photos()[0][:384, :384])
    out = resized_crop(png(photo), (0, 0, 384, 384), 96, "antialias").permute(1, 2, 0).numpy()
    assert np.abs(out - pil_bilinear(photo, 96)).max() <= 1


@pytest.mark.parametrize("quality", ["antialias", "fast"])
def test_enlarging_is_bilinear_in_both_qualities(quality):
    photo = np.ascontiguousarray(sample_photos()[1][:40, :40])
    out = resized_crop(png(photo), (0, 0, 40, 40), 80, quality).permute(1, 2, 0).numpy()
    assert np.abs(out - pil_bilinear(photo, 80)).mean() < 2


def test_normalisation_on_the_device_is_the_definition():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = torch.stack([(x[:, c].float() / 255 - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(normalize_batch(x), expected)


def test_a_corrupt_jpeg_is_skipped_by_name_and_too_many_fail_the_run(tiny, tmp_path, capfd):
    root = write_jpeg_folder(tmp_path / "data")
    bad = root / "train" / "c1" / "bad.jpg"
    bad.write_bytes((root / "train" / "c1" / "000.jpg").read_bytes()[:300])  # truncated
    common = ["data.name=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
              "model.name=resnet_small", "train.eval_every_epochs=0", "train.epochs=2"]
    summary = Trainer(load_recipe(tiny, common), tmp_path / "ok", LocalCollective()).fit()
    assert summary["step"] == 2 * math.floor(13 / 4) and summary["top1"] is not None
    assert f"skipping {bad}" in capfd.readouterr().err
    with pytest.raises(TrainingFailed, match=f"{bad}: 1 unreadable images .* data.max_bad_images=0"):
        Trainer(load_recipe(tiny, [*common, "data.max_bad_images=0"]), tmp_path / "strict", LocalCollective()).fit()


@pytest.mark.parametrize("need, expected", [
    ((40, 60), (47, 63)),      # 1/8 is enough
    ((60, 60), (94, 125)),     # 1/4
    ((150, 200), (188, 250)),  # 1/2
    ((189, 250), (0, 0)),      # more than 1/2: full size, never the slow 5/8-7/8 IDCTs
    ((300, 400), (0, 0)),
])
def test_dct_downscaling_uses_only_the_fast_power_of_two_scales(need, expected):
    from bigbatch.trainer.data.decode import _fast_scale

    assert _fast_scale(375, 500, *need) == expected


def test_a_crop_needing_more_than_half_the_image_is_decoded_at_full_size_then_resized():
    import simplejpeg

    from bigbatch.trainer.data.decode import _decode, _fast_scale

    data = jpeg(np.ascontiguousarray(sample_photos()[0][:375, :500]))
    assert _decode(data, *_fast_scale(375, 500, 250, 300)).shape == (375, 500, 3)
    assert _decode(data, *_fast_scale(375, 500, 100, 120)).shape == (188, 250, 3)
    assert simplejpeg.decode_jpeg(data, min_height=188, min_width=250).shape == (188, 250, 3)
