"""Image datasets that ship inside installed packages, so they need no download.

* ``digits``: scikit-learn's 8x8 handwritten digits (``sklearn.datasets.load_digits``, 1797 images, read from
  the package's own csv file). Pixel values are the integers 0..16, i.e. **17 levels**; an image is
  ``(1, 8, 8)`` with value ``v / 16``. Fixed split: the first 1500 images are ``train``, the remaining 297
  ``test`` (every class has 27 to 33 test images). ``labels`` holds the digit ``0..9`` of each image.
* ``faces``: the 100 face images of scikit-image's ``skimage.data.lfw_subset()`` (its last 100 images are
  non-faces and are not used), ``(1, 25, 25)`` greyscale. The package stores them as float64 in ``[0, 1]`` that
  are *not* quantized (resized crops: ~45 000 distinct values), so they are rounded to 8 bits,
  ``round(255 x)``, giving **256 levels** (rounding error at most 1/510). Fixed split: faces 0-79 ``train``,
  80-99 ``test``.
* ``photo_patches``: RGB 8-bit (**256 levels**) ``size x size`` crops of the colour photographs that ship with
  scikit-image (those that load offline; the others need ``pooch`` and a download). Split by source photo:
  ``train`` from astronaut, coffee, rocket, hubble_deep_field and immunohistochemistry; ``test`` from chelsea
  (the cat) and the left view of stereo_motorcycle. Crop positions are uniform, drawn from a seeded
  ``torch.Generator``, the same number per photo; photos may first be shrunk by an integer factor (box filter)
  so that a patch holds more of the scene.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import InMemoryDataset, check_split

DIGITS_LEVELS = 17
DIGITS_TRAIN_SIZE = 1500
FACES_COUNT = 100  # lfw_subset: the first 100 images are faces
FACES_TRAIN_SIZE = 80
PHOTOS = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"),
    "test": ("chelsea", "stereo_motorcycle"),
}


def _split_rows(array: np.ndarray, n_train: int, split: str) -> np.ndarray:
    return array[:n_train] if check_split(split) == "train" else array[n_train:]


def digits(split: str = "train") -> InMemoryDataset:
    """scikit-learn's 8x8 digits as 17-level images ``(N, 1, 8, 8)`` with their ``labels``: 1500 ``train`` / 297 ``test``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()  # images: float64 integers 0..16, (1797, 8, 8); target: the digits, (1797,)
    levels = _split_rows(bunch.images, DIGITS_TRAIN_SIZE, split)
    labels = torch.from_numpy(_split_rows(bunch.target, DIGITS_TRAIN_SIZE, split).astype(np.int64))
    return InMemoryDataset("digits", split, torch.from_numpy(levels.astype(np.uint8)[:, None]), DIGITS_LEVELS, labels)


def faces(split: str = "train") -> InMemoryDataset:
    """The 100 faces of scikit-image's ``lfw_subset`` rounded to 8 bits, ``(N, 1, 25, 25)``: 80 ``train`` / 20 ``test``."""
    from skimage.data import lfw_subset

    images = lfw_subset()[:FACES_COUNT]  # float64 in [0, 1], (100, 25, 25)
    levels = np.rint(np.clip(_split_rows(images, FACES_TRAIN_SIZE, split), 0.0, 1.0) * 255).astype(np.uint8)
    return InMemoryDataset("faces", split, torch.from_numpy(levels[:, None]), 256)


def load_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled RGB photographs as uint8 ``(H, W, 3)``."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        image = image[0]  # (left view, right view, disparity): the left view
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"skimage.data.{name} is not an 8-bit RGB photo ({image.dtype}, {image.shape})")
    return image


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by an integer factor with a box filter (the mean of each ``factor x factor`` block, rounded)."""
    return image if factor == 1 else np.asarray(Image.fromarray(image).reduce(factor))


def _random_crops(image: np.ndarray, size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` crops ``(count, 3, size, size)`` at uniform positions of ``image`` ``(H, W, 3)``."""
    h, w = image.shape[:2]
    if size > min(h, w):
        raise ValueError(f"patch size {size} exceeds the photo's {h}x{w} pixels")
    tops = torch.randint(0, h - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, w - size + 1, (count,), generator=generator)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W), a writable copy
    return torch.stack([tensor[:, t : t + size, l : l + size] for t, l in zip(tops.tolist(), lefts.tolist())])


def photo_patches(split: str = "train", size: int = 32, patches_per_image: int = 1000, seed: int = 0, downscale: int = 1) -> InMemoryDataset:
    """RGB 8-bit patches ``(N, 3, size, size)`` of scikit-image's photos, ``patches_per_image`` per photo of the split.

    The result depends only on the arguments: the crops come from ``torch.Generator().manual_seed(seed)``, photo
    after photo in the order of ``PHOTOS[split]``.
    """
    for name, value in (("size", size), ("patches_per_image", patches_per_image), ("downscale", downscale)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    generator = torch.Generator().manual_seed(int(seed))
    crops = [_random_crops(_shrink(load_photo(name), downscale), size, patches_per_image, generator) for name in PHOTOS[check_split(split)]]
    return InMemoryDataset("photo_patches", split, torch.cat(crops), 256)
