"""Dataset containers: quantized images held in memory, images decoded lazily from files, and continuous points.

Every dataset is a ``torch.utils.data.Dataset`` with

* ``name``, ``split`` (``"train"`` or ``"test"``), ``shape`` (one example: ``(C, H, W)`` or ``(2,)``);
* ``num_levels``: the number ``L`` of quantization levels of the data (17 for the 8x8 digits, 256 for 8-bit
  images), or ``None`` for continuous data (the toy densities). An image is stored as its integer levels
  ``k in {0, ..., L - 1}`` (uint8) and means the value ``k / (L - 1)`` in ``[0, 1]``;
* ``gather(indices) -> (B, *shape)`` tensor (uint8 levels for images, float points for toy data) and
  ``__getitem__(i)`` for ``torch.utils.data.DataLoader``;
* ``labels``: the class labels ``(N,)`` int64 of the examples, in dataset order, where the dataset has them (the
  digits), else ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

SPLITS = ("train", "test")


def check_split(split: str) -> str:
    """``split`` if it is ``"train"`` or ``"test"``, else ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
    return split


class Dataset(torch.utils.data.Dataset):
    """Common interface; subclasses define ``__len__`` and ``gather``."""

    labels: Tensor | None = None  # class labels (N,) int64 in dataset order, None where the data has none

    def __init__(self, name: str, split: str, shape: Sequence[int], num_levels: int | None):
        self.name = name  # config.data.dataset value that built it
        self.split = check_split(split)  # "train" or "test"
        self.shape = tuple(int(s) for s in shape)  # shape of one example
        if num_levels is not None and (isinstance(num_levels, bool) or int(num_levels) != num_levels or num_levels < 2):
            raise ValueError(f"num_levels must be an integer >= 2 or None, got {num_levels!r}")
        self.num_levels = None if num_levels is None else int(num_levels)  # quantization levels, None if continuous

    @property
    def continuous(self) -> bool:
        return self.num_levels is None

    def __len__(self) -> int:
        raise NotImplementedError

    def gather(self, indices: Tensor) -> Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Tensor:
        return self.gather(torch.tensor([index]))[0]

    def __repr__(self) -> str:
        levels = "continuous" if self.continuous else f"{self.num_levels} levels"
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, shape={self.shape}, {levels})"


class InMemoryDataset(Dataset):
    """All examples in one tensor ``data``: uint8 levels ``(N, C, H, W)`` for images, float ``(N, D)`` for points;
    optionally their class ``labels`` ``(N,)``."""

    def __init__(self, name: str, split: str, data: Tensor, num_levels: int | None, labels: Tensor | None = None):
        super().__init__(name, split, data.shape[1:], num_levels)
        if num_levels is not None:
            if data.dtype != torch.uint8 or data.ndim != 4:
                raise ValueError(f"quantized images must be a uint8 tensor (N, C, H, W), got {data.dtype} {tuple(data.shape)}")
            if data.numel() and int(data.max()) >= num_levels:
                raise ValueError(f"image levels must lie in [0, {num_levels - 1}], found {int(data.max())}")
        elif not data.is_floating_point():
            raise ValueError(f"continuous data must be a floating-point tensor, got {data.dtype}")
        if labels is not None and (labels.dtype != torch.int64 or tuple(labels.shape) != (data.shape[0],)):
            raise ValueError(f"labels must be an int64 tensor ({data.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        self.data = data  # the examples
        self.labels = labels  # class of each example, or None

    def __len__(self) -> int:
        return self.data.shape[0]

    def gather(self, indices: Tensor) -> Tensor:
        return self.data[indices]


class ImageFileDataset(Dataset):
    """Images decoded on demand from ``paths`` by ``load(path) -> uint8 (C, H, W)`` (8-bit, 256 levels)."""

    def __init__(self, name: str, split: str, paths: Sequence[Path], load: Callable[[Path], Tensor], shape: Sequence[int]):
        super().__init__(name, split, shape, 256)
        self.paths = list(paths)  # image files, in a fixed (sorted) order
        self.load = load  # decoder + crop/resize, picklable for DataLoader workers

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> Tensor:
        image = self.load(self.paths[index])
        if tuple(image.shape) != self.shape:
            raise ValueError(f"{self.paths[index]} gave an image of shape {tuple(image.shape)}, expected {self.shape}")
        return image

    def gather(self, indices: Tensor) -> Tensor:
        return torch.stack([self._load(int(i)) for i in indices])

    def __getitem__(self, index: int) -> Tensor:
        return self._load(index)
