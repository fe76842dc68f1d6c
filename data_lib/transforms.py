"""Image decoding, cropping and resizing with Pillow, as the 2021 reference's TensorFlow preprocessing.

Resizing uses Pillow's filters, which are antialiased when shrinking (their support grows with the
reduction factor), like ``tf.image.resize(..., antialias=True)``; values are rounded back to 8 bits, so the data
keep 256 levels (the reference keeps the float result of its CelebA resize, which is no longer quantized).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

#: file extensions read as images (case-insensitive)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

BILINEAR = Image.Resampling.BILINEAR
BICUBIC = Image.Resampling.BICUBIC


def open_image(path: Path, num_channels: int) -> Image.Image:
    """Decode ``path`` as RGB (``num_channels == 3``) or greyscale (``1``); ``ValueError`` naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB" if num_channels == 3 else "L")
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from None


def to_tensor(image: Image.Image) -> Tensor:
    """A Pillow image as uint8 ``(C, H, W)``."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def central_crop(image: Image.Image, size: int) -> Image.Image:
    """The ``size x size`` window whose top-left corner is ``((h - size) // 2, (w - size) // 2)`` (reference ``central_crop``)."""
    w, h = image.size
    if size > min(h, w):
        raise ValueError(f"cannot crop {size}x{size} from an image of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return image.crop((left, top, left + size, top + size))


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square (reference ``crop_resize``'s crop)."""
    return central_crop(image, min(image.size))


def resize_small(image: Image.Image, size: int, resample: Image.Resampling = BILINEAR) -> Image.Image:
    """Scale so that the shorter side is ``size``, the other ``round(side * size / shorter)`` (reference ``resize_small``)."""
    w, h = image.size
    ratio = size / min(h, w)
    new = (max(1, round(w * ratio)), max(1, round(h * ratio)))
    return image if new == (w, h) else image.resize(new, resample=resample)


def resize_square(image: Image.Image, size: int, resample: Image.Resampling = BICUBIC) -> Image.Image:
    """Resize to ``size x size`` (identity if already that size)."""
    return image if image.size == (size, size) else image.resize((size, size), resample=resample)


def resize_levels(levels: Tensor, size: int) -> Tensor:
    """Resize uint8 images ``(N, C, H, W)`` to ``size x size`` with antialiased bilinear filtering (8-bit result)."""
    if levels.shape[-2:] == (size, size):
        return levels
    mode = "L" if levels.shape[1] == 1 else "RGB"
    out = []
    for image in levels.permute(0, 2, 3, 1).numpy():
        pil = Image.fromarray(image[:, :, 0] if mode == "L" else image, mode=mode)
        out.append(to_tensor(resize_square(pil, size, BILINEAR)))
    return torch.stack(out)


def list_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursively), sorted by relative path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# ------------------------------------------------------------------ picklable loaders for ImageFileDataset
class LoadCropResize:
    """Decode, take the largest centred square, resize to ``size`` with bicubic filtering (reference ``crop_resize``)."""

    def __init__(self, size: int, num_channels: int = 3):
        self.size = size  # output side
        self.num_channels = num_channels  # 1 (greyscale) or 3 (RGB)

    def __call__(self, path: Path) -> Tensor:
        return to_tensor(resize_square(center_square(open_image(path, self.num_channels)), self.size, BICUBIC))


class LoadResizeSmallCrop:
    """Decode, shrink the shorter side to ``size`` (bilinear), take the central ``size`` square (reference LSUN 128)."""

    def __init__(self, size: int):
        self.size = size  # output side

    def __call__(self, path: Path) -> Tensor:
        return to_tensor(central_crop(resize_small(open_image(path, 3), self.size), self.size))


class LoadCelebA:
    """Decode, take the central 140 x 140 window, shrink to ``size`` (bilinear): the reference's CelebA preprocessing."""

    CROP = 140

    def __init__(self, size: int):
        self.size = size  # output side

    def __call__(self, path: Path) -> Tensor:
        return to_tensor(resize_small(central_crop(open_image(path, 3), self.CROP), self.size))
