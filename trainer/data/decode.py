"""JPEG decode + the torchvision-reference augmentation, producing uint8 CHW tensors.

libjpeg-turbo decodes faster per core than PIL, and can downscale in the DCT
domain (by 1/2, 1/4 or 1/8) while decoding: when the crop that will be resized
to `size` is at least twice `size`, the image is decoded at the smallest of
those scales that keeps the crop at least `size` pixels, so less is decoded and
less is resized (the 3/8-7/8 scales are slower than a full decode). JPEGs are
decoded only where the crop is (`_roijpeg`, a C extension: libjpeg's partial
decompression), with the pixels of a whole-image decode; simplejpeg reads the
headers and decodes whole images (`roi=False`), PIL other formats. Training: RandomResizedCrop(size, scale
(0.08, 1), ratio (3/4, 4/3)) + horizontal flip, drawn from a generator seeded
per example (same image in any worker, after any resume). Evaluation: resize
the short side to size * 256 / 224, centre crop. Normalisation happens later,
on the device, on whole uint8 batches (`normalize_batch`).

Resize quality (`data.resize_quality`): `antialias` (default) shrinks with
PIL's antialiased bilinear filter (torch's uint8 kernel of it), the filter of
torchvision's reference pipeline, and enlarges bilinearly; `fast` resizes
bilinearly without antialiasing (2x2 taps whatever the factor, as DALI's and
FFCV's fast paths can), faster per image, at the cost of aliasing on crops
shrunk by more than ~2x. `bench/data.py`
measures both against a full-decode Lanczos reference, beside torchvision's.
"""

import functools
import io
import math
import random
import threading

import cv2
import numpy as np
import torch

from bigbatch.trainer.data import _roijpeg

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
cv2.setNumThreads(1)  # parallelism comes from loader workers; OpenCV's own threads would oversubscribe


class CorruptImage(ValueError):
    """An image that cannot be decoded; the data set counts and skips it."""


def random_resized_crop_box(height: int, width: int, rng: random.Random, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w): area uniform in `scale` of the image, log-uniform aspect ratio, 10 tries, else the
    largest centred crop with the ratio clamped into `ratio` (the algorithm of Szegedy et al. as torchvision
    describes it)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _decode(data: bytes, min_height: int = 0, min_width: int = 0) -> np.ndarray:
    """HWC uint8 RGB; JPEGs through simplejpeg (DCT-downscaled to at least min_height x min_width), others PIL."""
    import simplejpeg

    try:
        if simplejpeg.is_jpeg(data):
            if simplejpeg.decode_jpeg_header(data)[2] == "CMYK":
                return _cmyk_to_rgb(simplejpeg.decode_jpeg(data, colorspace="CMYK", min_height=min_height,
                                                           min_width=min_width))
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_height, min_width=min_width)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))
    except Exception as e:  # libjpeg-turbo and PIL raise several types for broken data
        raise CorruptImage(str(e) or e.__class__.__name__) from None


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Adobe CMYK (stored inverted, as libjpeg returns it) -> RGB as PIL converts it, r = c k / 255 rounded, as
    `_roijpeg` does; TurboJPEG's own conversion comes out one level brighter on most pixels."""
    product = cmyk[..., :3].astype(np.uint16) * cmyk[..., 3:].astype(np.uint16)
    return ((product + 127) // 255).astype(np.uint8)


def _dct_eighths(height: int, width: int, min_height: int, min_width: int) -> int:
    """The DCT scale, in eighths, to decode at: the smallest of 1/8, 1/4, 1/2, 1 that keeps the image at least
    min_height x min_width. libjpeg-turbo's SIMD IDCTs cover only these; its 3/8-7/8 scales run in plain C and
    decode a 500x375 JPEG 1.3-1.9x slower than at full size (measured here)."""
    for eighths in (1, 2, 4):
        if -(-height * eighths // 8) >= min_height and -(-width * eighths // 8) >= min_width:
            return eighths
    return 8


def _scaled(height: int, width: int, eighths: int) -> tuple[int, int]:
    """The image's size decoded at eighths/8 (libjpeg rounds up)."""
    return -(-height * eighths // 8), -(-width * eighths // 8)


def _fast_scale(height: int, width: int, min_height: int, min_width: int) -> tuple[int, int]:
    """The (min_height, min_width) to ask simplejpeg for, so that it decodes at `_dct_eighths`'s scale."""
    return _simplejpeg_size(height, width, _dct_eighths(height, width, min_height, min_width))


def _simplejpeg_size(height: int, width: int, eighths: int) -> tuple[int, int]:
    """simplejpeg's (min_height, min_width) for a decode at eighths/8; (0, 0) is full size."""
    return (0, 0) if eighths == 8 else _scaled(height, width, eighths)


_SCRATCH = threading.local()
SCRATCH_BYTES = 8 << 20  # larger images get their own array: one huge photo should not pin its size per thread


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array of `shape` (old contents), reusing this thread's buffer: valid until the thread's next call.
    Fresh memory costs a page fault per 4 KB touched whenever the allocator had returned it to the OS, and the
    evaluation canvas, read where the band was not written, made those faults copy-on-write ones (measured:
    up to ~0.2 ms of a ~1.1 ms evaluation decode, varying with the allocator's state; none with this buffer)."""
    size = math.prod(shape)
    if size > SCRATCH_BYTES:
        return np.empty(shape, np.uint8)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH.buffer = np.empty(max(size, 1 << 20), np.uint8)
        buffer.fill(0)  # every page written once, now: a page first read (the canvas outside a band) maps the
        # kernel's shared zero page, and the write that follows pays a copy-on-write fault
    return buffer[:size].reshape(shape)


def _is_jpeg(data: bytes) -> bool:
    """simplejpeg's test, the one `_decode` routes by: a file takes the same decoder with or without `roi` (a JPEG
    without its end marker goes to PIL either way), so the two paths give the same pixels or both fail."""
    import simplejpeg

    return simplejpeg.is_jpeg(data)


def _decode_box(data: bytes, eighths: int, box: tuple[int, int, int, int], roi: bool = True,
                dims: tuple[int, int] | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The (top, left, h, w) box of the image decoded at eighths/8, HWC uint8 RGB (written into `out`, a view
    of that shape, when given; else into this thread's scratch buffer: use it before the next decode). JPEGs
    (with `roi`): only the box's rows and iMCU columns are decompressed (`_roijpeg`, libjpeg-turbo's partial
    decompression), with the same pixels as a full decode cut to the box; other formats, or `roi=False`: full
    decode, then cut."""
    top, left, h, w = box
    if roi and _is_jpeg(data):
        try:
            return _roijpeg.decode_box(data, eighths, top, left, _scratch((h, w, 3)) if out is None else out)
        except ValueError as e:  # libjpeg's message: corrupt, truncated or unsupported data
            raise CorruptImage(str(e)) from None
    height, width = dims or _header(data)
    image = _decode(data, *_simplejpeg_size(height, width, eighths))
    return image[top:top + h, left:left + w]


def _header(data: bytes) -> tuple[int, int]:
    import simplejpeg

    try:
        if simplejpeg.is_jpeg(data):
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except Exception as e:
        raise CorruptImage(str(e) or e.__class__.__name__) from None


def _resize(image: np.ndarray, height: int, width: int, quality: str = "antialias") -> torch.Tensor:
    """uint8 HWC (any strides) -> uint8 CHW tensor at (height, width). Shrinking with `antialias`: torch's
    antialiased bilinear on uint8 (PIL's filter - the triangle widened by the shrink factor - in an AVX2
    kernel, ~2.5x faster than PIL and OpenCV's area filter here); with `fast`: OpenCV's bilinear, which
    samples 2x2 pixels whatever the factor (~4x faster again, aliasing when shrinking by more than ~2x).
    Enlarging: OpenCV's bilinear in both (antialiasing changes nothing there)."""
    if image.shape[:2] == (height, width):  # a copy: `image` may be a scratch buffer
        return torch.from_numpy(np.array(image, order="C")).permute(2, 0, 1)
    if quality == "antialias" and (image.shape[0] > height or image.shape[1] > width):
        chw = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)  # the strided crop view, no copy
        return torch.nn.functional.interpolate(chw, size=(height, width), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
    hwc = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)  # reads the strided view
    return torch.from_numpy(hwc).permute(2, 0, 1)


def resized_crop(data: bytes, box: tuple[int, int, int, int], size: int, quality: str = "antialias",
                 dims: tuple[int, int] | None = None, roi: bool = True) -> torch.Tensor:
    """The (top, left, h, w) box of an encoded image resized to size x size, as uint8 CHW: decoded at the
    smallest fast DCT scale that keeps the box >= size on both sides, and (JPEGs, `roi`) only where the box
    is. `dims`: the image's (height, width) when the caller has read the header already."""
    height, width = dims or _header(data)
    eighths, cut = crop_cut(height, width, box, size, _is_jpeg(data))
    return _resize(_decode_box(data, eighths, cut, roi, (height, width)), size, size, quality)


def crop_cut(height: int, width: int, box: tuple[int, int, int, int], size: int,
             jpeg: bool = True) -> tuple[int, tuple[int, int, int, int]]:
    """(eighths, box in the image decoded at eighths/8) for resizing the (top, left, h, w) box of a height x
    width image to size x size: the smallest fast DCT scale (JPEGs) that keeps the box >= size on both sides."""
    top, left, h, w = box
    eighths = _dct_eighths(height, width, math.ceil(height * size / h), math.ceil(width * size / w)) if jpeg else 8
    scaled_h, scaled_w = _scaled(height, width, eighths)
    sy, sx = scaled_h / height, scaled_w / width
    y0, x0 = int(top * sy), int(left * sx)
    y1, x1 = max(y0 + 1, round((top + h) * sy)), max(x0 + 1, round((left + w) * sx))
    return eighths, (y0, x0, y1 - y0, x1 - x0)


def decode_train(data: bytes, size: int, rng: random.Random, quality: str = "antialias",
                 roi: bool = True) -> torch.Tensor:
    """RandomResizedCrop(size) + flip of an encoded image, as uint8 CHW."""
    dims = _header(data)
    box = random_resized_crop_box(*dims, rng)
    flip = rng.random() < 0.5
    crop = resized_crop(data, box, size, quality, dims, roi)
    return crop.flip(-1) if flip else crop


EVAL_CROP_PCT = 224 / 256  # torchvision's reference: resize to 256, crop 224


def decode_eval(data: bytes, size: int, quality: str = "antialias", crop_pct: float = EVAL_CROP_PCT,
                roi: bool = True) -> torch.Tensor:
    """Resize the short side to size / crop_pct (256 for 224 by default), centre-crop size x size, as uint8 CHW.
    JPEGs (with `roi`) decode only the band of rows and columns that the crop's resize filters read, into an
    image of the full decoded size whose other pixels are never read: the pixels equal a full decode's."""
    height, width = _header(data)
    short = round(size / crop_pct)
    scale = short / min(height, width)
    new_h, new_w = max(short, round(height * scale)), max(short, round(width * scale))
    jpeg = _is_jpeg(data)
    eighths = _dct_eighths(height, width, new_h, new_w) if jpeg else 8
    scaled_h, scaled_w = _scaled(height, width, eighths)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    rows, cols = _read_span(scaled_h, new_h, top, size), _read_span(scaled_w, new_w, left, size)
    if roi and jpeg and (rows != (0, scaled_h) or cols != (0, scaled_w)):
        image = _scratch((scaled_h, scaled_w, 3))
        _decode_box(data, eighths, (rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0]),
                    out=image[rows[0]:rows[1], cols[0]:cols[1]])
    else:
        image = _decode_box(data, eighths, (0, 0, scaled_h, scaled_w), False, (height, width))
    resized = _resize(image, new_h, new_w, quality)
    return resized[:, top:top + size, left:left + size].contiguous()


def _read_span(length: int, new_length: int, start: int, size: int) -> tuple[int, int]:
    """The [first, last) input pixels that a resize of `length` pixels to `new_length` reads for its outputs
    [start, start + size): output i is centred on input (i + 0.5) s - 0.5 (s = length / new_length, half-pixel
    centres as in torch and OpenCV) and the antialiased filter reaches max(s, 1) either side (bilinear: 1); two
    pixels more cover the filters' rounding of their window."""
    s = length / new_length
    reach = max(s, 1.0) + 2
    first = math.floor((start + 0.5) * s - 0.5 - reach)
    last = math.ceil((start + size - 0.5) * s - 0.5 + reach) + 1
    return max(first, 0), min(last, length)


def normalize_batch(images: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 NCHW (on the device, in any layout) -> float in `memory_format`, scaled to [0, 1] and standardised
    per channel."""
    scale, shift = _standardiser(images.device, tuple(mean[:images.shape[1]]), tuple(std[:images.shape[1]]))
    if images.dim() == 4 and memory_format == torch.channels_last:
        # per-channel broadcasts over an innermost dimension of 3 are slow: one fused multiply-add over the
        # NHWC view is ~1.6x faster than two passes
        nhwc = images.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        return torch.addcmul(-shift.view(-1), nhwc.float(), scale.view(-1)).permute(0, 3, 1, 2)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    out.copy_(images)  # cast and layout change in one pass (a decoded batch arrives channels-last)
    return out.mul_(scale).sub_(shift)  # (x / 255 - m) / s in two in-place passes


@functools.lru_cache(maxsize=16)
def _standardiser(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """(1 / (255 s), m / s) per channel on the device, made once: a tensor built from host numbers is a blocking
    host-to-device copy on a GPU, which every micro-batch would otherwise pay."""
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return 1 / (255 * s), m / s
