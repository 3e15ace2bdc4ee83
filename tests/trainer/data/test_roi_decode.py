"""Region-of-interest JPEG decoding (issue 32): the box decoded alone equals a full decode cut to the box.

The reference is simplejpeg (TurboJPEG) decoding the whole image at the same DCT scale, then slicing: the
definition of "the box of the decoded image". The cases are the ones partial decompression can get wrong:
boxes at the image's edges and on iMCU boundaries (fancy chroma upsampling reads a neighbour column), tiny
and full boxes, every chroma subsampling, greyscale, CMYK, progressive and restart-marker JPEGs, odd sizes.
"""

import io
import random
import threading

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from bigbatch.trainer.data import _roijpeg, decode
from bigbatch.trainer.data.decode import (
    CorruptImage,
    decode_eval,
    decode_train,
    random_resized_crop_box,
    resized_crop,
)
from tests.images import sample_photos


def _encode(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _variants() -> dict[str, bytes]:
    photo = sample_photos()[0]
    rgb = Image.fromarray(photo[40:40 + 301, 70:70 + 403])  # odd sizes: 301 x 403
    return {
        "420": _encode(rgb, quality=90),
        "422": _encode(rgb, quality=90, subsampling=1),
        "444": _encode(rgb, quality=90, subsampling=0),
        "grey": _encode(rgb.convert("L"), quality=90),
        "cmyk": _encode(rgb.convert("CMYK"), quality=90),
        "progressive": _encode(rgb, quality=90, progressive=True),
        "restarts": _encode(rgb, quality=90, restart_marker_blocks=3),
        "tiny 13x7": _encode(Image.fromarray(photo[:13, :7]), quality=90),
        "one pixel": _encode(Image.fromarray(photo[:1, :1]), quality=90),
        "tall 600x33": _encode(Image.fromarray(photo[:600 // 2 * 1, 100:133].repeat(2, axis=0)), quality=85),
    }


VARIANTS = _variants()


def _full_decode(data: bytes, eighths: int) -> np.ndarray:
    """The whole image at eighths/8, by simplejpeg: the reference the box must be cut from. CMYK: the raw
    (Adobe, inverted) values converted as PIL converts them, r = round(c k / 255) (Pillow's cmyk2rgb with its
    inversion undone); TurboJPEG's own conversion differs from PIL's by a level."""
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    scaled = (-(-height * eighths // 8), -(-width * eighths // 8))
    if colorspace == "CMYK":
        raw = simplejpeg.decode_jpeg(data, colorspace="CMYK", min_height=scaled[0], min_width=scaled[1]).astype(int)
        image = np.floor(raw[..., :3] * raw[..., 3:] / 255 + 0.5).astype(np.uint8)
    else:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=scaled[0], min_width=scaled[1])
    assert image.shape[:2] == scaled
    return image


def _boxes(height: int, width: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    boxes = [(0, 0, height, width), (0, 0, 1, 1), (height - 1, width - 1, 1, 1), (0, width - 1, height, 1),
             (height - 1, 0, 1, width)]
    for edge in (8, 16, 32):  # boxes starting and ending on both sides of iMCU boundaries
        for x in (edge - 1, edge, edge + 1):
            if x < width:
                boxes += [(0, x, height, min(edge, width - x)), (min(x, height - 1), 0, 1, x + 1 if x < width else x)]
    for _ in range(25):
        h, w = rng.randint(1, height), rng.randint(1, width)
        boxes.append((rng.randint(0, height - h), rng.randint(0, width - w), h, w))
    return boxes


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_decoded_box_equals_a_full_decode_cut_to_it_at_every_dct_scale(name):
    data = VARIANTS[name]
    rng = random.Random(name)
    for eighths in (1, 2, 4, 8):
        full = _full_decode(data, eighths)
        for top, left, h, w in _boxes(*full.shape[:2], rng):
            box = _roijpeg.decode_box(data, eighths, top, left, np.empty((h, w, 3), np.uint8))
            expected = full[top:top + h, left:left + w]
            assert np.array_equal(box, expected), (name, eighths, (top, left, h, w),
                                                   int(np.abs(box.astype(int) - expected).max()))


def test_cmyk_jpegs_decode_as_pil_converts_them_like_torchvision_s_loader_on_both_paths():
    data = VARIANTS["cmyk"]
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "CMYK"
        pil = np.asarray(image.convert("RGB"))
    assert np.array_equal(_full_decode(data, 8), pil)
    box = (0, 0, *pil.shape[:2])
    assert np.array_equal(decode._decode_box(data, 8, box), pil)
    assert np.array_equal(decode._decode_box(data, 8, box, roi=False), pil)


@pytest.mark.parametrize("quality", ["antialias", "fast"])
def test_training_crops_are_the_pixels_of_the_full_decode_path(quality):
    """Same crop boxes (same keyed generator), same pixels: ROI decoding changes no run's examples."""
    for name, data in VARIANTS.items():
        rng = random.Random(7)
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        for size in (224, 32, 8):
            for _ in range(6):
                box = random_resized_crop_box(height, width, rng)
                roi = resized_crop(data, box, size, quality)
                assert np.array_equal(roi.numpy(), resized_crop(data, box, size, quality, roi=False).numpy()), (
                    name, size, box)
        for seed in range(3):  # the training path: same generator, same box and flip, same pixels
            rng_roi, rng_full = random.Random(seed), random.Random(seed)
            box = random_resized_crop_box(height, width, rng_full)
            full = resized_crop(data, box, 64, quality, roi=False)
            full = full.flip(-1) if rng_full.random() < 0.5 else full
            assert np.array_equal(decode_train(data, 64, rng_roi, quality).numpy(), full.numpy())


@pytest.mark.parametrize("quality", ["antialias", "fast"])
def test_evaluation_crops_are_the_pixels_of_the_full_decode_path(quality):
    photo = sample_photos()[1]
    shapes = [(375, 500), (500, 375), (427, 640), (256, 256), (120, 90), (37, 301)]
    for height, width in shapes:
        data = _encode(Image.fromarray(photo[:height, :width]), quality=90)
        for size, crop_pct in ((224, 224 / 256), (160, 0.95), (64, 0.875), (96, 1.0)):
            roi = decode_eval(data, size, quality, crop_pct)
            full = decode_eval(data, size, quality, crop_pct, roi=False)
            assert roi.shape == (3, size, size)
            assert np.array_equal(roi.numpy(), full.numpy()), ((height, width), size, crop_pct)


def test_training_and_evaluation_decode_only_the_box_of_a_jpeg(monkeypatch):
    """The default paths go through the ROI decoder, asking for less than the image where the crop is smaller."""
    calls = []

    class Spy:
        @staticmethod
        def decode_box(data, eighths, top, left, out):
            calls.append((eighths, *out.shape[:2]))
            return _roijpeg.decode_box(data, eighths, top, left, out)

    monkeypatch.setattr(decode, "_roijpeg", Spy)
    data = _encode(Image.fromarray(sample_photos()[0][:375, :500]), quality=90)
    for seed in range(20):
        decode_train(data, 224, random.Random(seed))
    assert len(calls) == 20
    kept = [h * w / (-(-375 * eighths // 8) * -(-500 * eighths // 8)) for eighths, h, w in calls]
    assert max(kept) <= 1 and np.mean(kept) < 0.75  # RandomResizedCrop keeps ~half of the area on average
    calls.clear()
    decode_eval(data, 224)
    (eighths, h, w), = calls
    assert eighths == 8 and h < 375 and w < 500  # 224 of 256 rows, 224 of 341 columns, plus the filters' reach


def test_damaged_jpegs_and_boxes_outside_the_image_raise_corrupt_image():
    data = VARIANTS["420"]
    with pytest.raises(CorruptImage):
        resized_crop(data[:len(data) // 2], (250, 0, 50, 400), 64)  # the box lies in the missing half
    with pytest.raises(CorruptImage):
        resized_crop(data[:2] + bytes(200), (0, 0, 10, 10), 8)
    with pytest.raises(ValueError, match="outside"):
        _roijpeg.decode_box(data, 8, 300, 0, np.empty((2, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="eighths"):
        _roijpeg.decode_box(data, 3, 0, 0, np.empty((2, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="contiguous pixels"):
        _roijpeg.decode_box(data, 8, 0, 0, np.empty((2, 10, 3), np.uint8)[:, ::2])
    read_only = np.empty((2, 10, 3), np.uint8)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):  # numpy's refusal of a writable buffer
        _roijpeg.decode_box(data, 8, 0, 0, read_only)


def test_a_box_written_into_a_view_of_a_wider_image_leaves_the_rest_untouched():
    data = VARIANTS["420"]
    canvas = np.full((301, 403, 3), 7, np.uint8)
    _roijpeg.decode_box(data, 8, 100, 50, canvas[100:150, 50:250])
    full = _full_decode(data, 8)
    assert np.array_equal(canvas[100:150, 50:250], full[100:150, 50:250])
    canvas[100:150, 50:250] = 7
    assert (canvas == 7).all()


def test_other_formats_take_the_full_decode_path():
    buffer = io.BytesIO()
    Image.fromarray(sample_photos()[0][:120, :160]).save(buffer, format="PNG")
    png = buffer.getvalue()
    rng = random.Random(3)
    for _ in range(5):
        box = random_resized_crop_box(120, 160, rng)
        assert np.array_equal(resized_crop(png, box, 48).numpy(), resized_crop(png, box, 48, roi=False).numpy())


def test_threads_decode_concurrently_to_the_same_pixels():
    """The decoder releases the GIL (loader threads, Ray's worker threads): each thread's boxes are its own."""
    data = VARIANTS["444"]
    boxes = _boxes(301, 403, random.Random(1))
    def decode_all() -> list[bytes]:
        return [_roijpeg.decode_box(data, 8, top, left, np.empty((h, w, 3), np.uint8)).tobytes()
                for top, left, h, w in boxes]

    expected = decode_all()
    results: dict[int, list[bytes]] = {}

    def work(k: int) -> None:
        results[k] = decode_all()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[k] == expected for k in range(4))


@pytest.mark.parametrize("name", ["folder", "shards"])
def test_the_recipe_key_decode_region_chooses_the_path_for_training_and_evaluation(name, tmp_path, monkeypatch):
    from bigbatch.trainer.data import load_data
    from bigbatch.trainer.recipe.schema import DataConfig
    from tests.images import write_jpeg_folder, write_packed_shards

    root = write_jpeg_folder(tmp_path, classes=2, per_class=2, val_per_class=1) if name == "folder" else \
        write_packed_shards(tmp_path, 40_000, classes=2, per_class=2, val_per_class=1)
    calls = []

    class Spy:
        @staticmethod
        def decode_box(*args):
            calls.append(args[1:4])
            return _roijpeg.decode_box(*args)

    monkeypatch.setattr(decode, "_roijpeg", Spy)
    images = {}
    for region in (True, False):
        calls.clear()
        splits = load_data(DataConfig(name=name, root=str(root), batch_size=2, image_size=32,
                                      decode_region=region), seed=0)
        train = [splits.train[i][0] for i in range(len(splits.train))] if name == "folder" else \
            [x for batch in splits.train for x, _ in batch]  # the training stream yields micro-batches
        val = [splits.val[i][0] for i in range(len(splits.val))] if name == "folder" else [x for x, _ in splits.val]
        assert (len(calls) >= len(train)) if region else not calls  # every training crop, when on
        images[region] = torch.stack(train + val)
    assert torch.equal(images[True], images[False])  # same examples either way


def test_crops_own_their_pixels_although_the_decoder_reuses_its_scratch_buffer():
    """A crop that needs no resize is copied out of the thread's scratch buffer: the next decode overwrites it."""
    data = VARIANTS["420"]
    first = resized_crop(data, (0, 0, 64, 64), 64)  # 64 x 64 at full scale: no resize
    kept = first.clone()
    second = resized_crop(data, (200, 300, 64, 64), 64)
    evaluated = decode_eval(data, 64, crop_pct=1.0)
    assert torch.equal(first, kept) and not torch.equal(first, second)
    assert torch.equal(first.permute(1, 2, 0), torch.from_numpy(_full_decode(data, 8)[:64, :64].copy()))
    assert evaluated.shape == (3, 64, 64)
