"""``get_dataset(config, split)`` and seeded, shardable batch iteration with random flips and uniform dequantization.

Config fields (``config.data``, the 2021 reference's names): ``dataset``, ``image_size``, ``num_channels``,
``random_flip``, ``uniform_dequantization``, ``centered`` (see :mod:`data_lib.scalers`), plus ``root`` (the local
folder of a real dataset), ``skip_bad_images`` (image files that do not decode are left out, with a warning, instead
of stopping the run), ``category`` (LSUN), ``seed`` (toy points, photo patches), ``num_train`` / ``num_test`` (toy
points), ``patches_per_image`` and ``photo_downscale`` (photo patches), ``center_crop`` (faces: a centred crop of that
side, e.g. 24 for an even size; ``image_size`` must then equal it).

Batches are float images in ``[0, 1]`` (the levels ``k / (L - 1)``; the model's scaler is applied by the
caller) or float toy points, built on the CPU. Uniform dequantization maps level ``k`` to ``(k + u) / L`` with
``u ~ U[0, 1)`` (Theis et al. 2016, "A note on the evaluation of generative models"), the reference's ``(x (L - 1) + u) / L`` with ``L = num_levels``.

Sharding for ``torch.distributed``: every rank draws the same epoch order ``o`` (same seed) and takes
``o[rank::world_size]``; so the shards are disjoint, their union is the epoch, and the ``b``-th batches of all
ranks together are exactly ``o[b W B : (b + 1) W B]``, the ``b``-th batch of one process with batch ``W B``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .dequantize import uniform_dequantize
from base_lib.checks import check_bool, check_positive_int
from base_lib.config import config_value

from . import embedded, files
from .audio import AUDIO_DATASETS, audio_from_config
from .base import Dataset, InMemoryDataset, check_split
from .toy import TOY_DATASETS, sample_toy_with_labels

TOY_DEFAULT_SIZES = {"train": 100_000, "test": 10_000}
PHOTO_PATCHES_PER_IMAGE = 1000


# ------------------------------------------------------------------ config helpers
def mix_seeds(*values: int) -> int:
    """A well-mixed 64-bit seed from integers (numpy's ``SeedSequence``, stable across versions)."""
    return int(np.random.SeedSequence([int(v) % 2**64 for v in values]).generate_state(1, dtype=np.uint64)[0])


def _data_field(config: Any, field: str, default: Any = ...) -> Any:
    return config_value(config, f"data.{field}", default)


def _int_field(config: Any, field: str, default: Any = ...) -> int:
    value = _data_field(config, field, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"config.data.{field} must be an integer >= 1, got {value!r}")
    return int(value)


def _root(config: Any, expected: str) -> str:
    root = _data_field(config, "root", None)
    if not root:
        raise ValueError(f"config.data.root must name the local folder of {config.data.dataset}: {expected}")
    return str(root)


def _channels(config: Any, allowed: tuple[int, ...], default: int) -> int:
    channels = _int_field(config, "num_channels", default)
    if channels not in allowed:
        raise ValueError(f"config.data.num_channels must be {' or '.join(map(str, allowed))} for {config.data.dataset}, got {channels}")
    return channels


def _fixed_shape(config: Any, shape: tuple[int, int, int]) -> None:
    """Datasets of one resolution: ``config.data.image_size`` / ``num_channels``, if set, must match it."""
    channels, size = shape[0], shape[1]
    if _int_field(config, "image_size", size) != size:
        raise ValueError(f"config.data.image_size must be {size} for {config.data.dataset} (images are {size}x{size}), got {config.data.image_size}")
    _channels(config, (channels,), channels)


# ------------------------------------------------------------------ builders: (config, split) -> Dataset
def _toy(config: Any, split: str) -> InMemoryDataset:
    name = str(config.data.dataset).lower()
    if _data_field(config, "dim", 2) != 2:
        raise ValueError(f"config.data.dim must be 2 for the toy density {name!r}, got {config.data.dim}")
    for flag in ("random_flip", "uniform_dequantization"):
        if _data_field(config, flag, False):
            raise ValueError(f"config.data.{flag} applies to images; the toy density {name!r} is continuous 2-D data")
    n = _int_field(config, "num_train" if split == "train" else "num_test", TOY_DEFAULT_SIZES[split])
    seed = int(_data_field(config, "seed", 0))
    generator = torch.Generator().manual_seed(mix_seeds(seed, 0 if split == "train" else 1))
    points, labels = sample_toy_with_labels(name, n, generator)
    return InMemoryDataset(name, split, points, None, labels)


def _digits(config: Any, split: str) -> Dataset:
    _fixed_shape(config, (1, 8, 8))
    return embedded.digits(split)


def _faces(config: Any, split: str) -> Dataset:
    crop = _data_field(config, "center_crop", None)
    if crop is None:
        _fixed_shape(config, (1, 25, 25))
        return embedded.faces(split)
    crop = _int_field(config, "center_crop")
    if crop > 25:
        raise ValueError(f"config.data.center_crop must be <= 25 for faces (images are 25x25), got {crop}")
    _fixed_shape(config, (1, crop, crop))
    faces, start = embedded.faces(split), (25 - crop) // 2  # 25 -> 24 drops the last row and column
    return InMemoryDataset(faces.name, split, faces.data[:, :, start : start + crop, start : start + crop].contiguous(), faces.num_levels)


def _photo_patches(config: Any, split: str) -> Dataset:
    _channels(config, (3,), 3)
    return embedded.photo_patches(
        split,
        size=_int_field(config, "image_size"),
        patches_per_image=_int_field(config, "patches_per_image", PHOTO_PATCHES_PER_IMAGE),
        seed=int(_data_field(config, "seed", 0)),
        downscale=_int_field(config, "photo_downscale", 1),
    )


def _cifar10(config: Any, split: str) -> Dataset:
    _channels(config, (3,), 3)
    return files.cifar10(_root(config, "cifar-10-batches-py/ (python version)"), split, _int_field(config, "image_size", 32))


def _mnist(config: Any, split: str) -> Dataset:
    _channels(config, (1,), 1)
    return files.mnist(_root(config, "the idx files (train-images-idx3-ubyte[.gz], t10k-...)"), split, _int_field(config, "image_size", 28))


def _skip_bad_images(config: Any) -> bool:
    """``config.data.skip_bad_images``: leave out image files that do not decode (logged) instead of stopping."""
    return check_bool("config.data.skip_bad_images", _data_field(config, "skip_bad_images", False))


def _celeba(config: Any, split: str) -> Dataset:
    _channels(config, (3,), 3)
    return files.celeba(_root(config, "img_align_celeba/"), split, _int_field(config, "image_size"), _skip_bad_images(config))


def _lsun(config: Any, split: str) -> Dataset:
    _channels(config, (3,), 3)
    category = _data_field(config, "category")
    return files.lsun(_root(config, f"{category}_train/ and {category}_val/ image folders"), split, category, _int_field(config, "image_size"),
                      _skip_bad_images(config))


def _folder(name: str) -> Callable[[Any, str], Dataset]:
    def build(config: Any, split: str) -> Dataset:
        channels = _channels(config, (1, 3), 3)
        root = _root(config, "a folder of PNG/JPEG images (optionally train/ and test/ subfolders)")
        return files.image_folder(root, split, _int_field(config, "image_size"), channels, name, _skip_bad_images(config))

    return build


_BUILDERS: dict[str, Callable[[Any, str], Dataset]] = {
    "CIFAR10": _cifar10,
    "MNIST": _mnist,
    "CELEBA": _celeba,
    "LSUN": _lsun,
    "FFHQ": _folder("FFHQ"),
    "CelebAHQ": _folder("CelebAHQ"),
    "image_folder": _folder("image_folder"),
    "digits": _digits,
    "faces": _faces,
    "photo_patches": _photo_patches,
    **{name: _toy for name in TOY_DATASETS},
    **{name: audio_from_config for name in AUDIO_DATASETS},  # waveforms (1, L): data_lib.audio
}

#: the ``config.data.dataset`` values understood (matched case-insensitively)
DATASETS: tuple[str, ...] = tuple(_BUILDERS)


def available_datasets() -> list[str]:
    return list(DATASETS)


def _builder(name: Any) -> Callable[[Any, str], Dataset]:
    by_key = {key.lower(): build for key, build in _BUILDERS.items()}
    if not isinstance(name, str) or name.lower() not in by_key:
        raise ValueError(f"unknown config.data.dataset {name!r}; known: {', '.join(DATASETS)}")
    return by_key[name.lower()]


def get_dataset(config: Any, split: str = "train") -> Dataset:
    """The ``split`` (``"train"`` or ``"test"``) of ``config.data.dataset``.

    Checks the config against the dataset before loading anything heavy: an unknown name, an ``image_size`` or
    ``num_channels`` the data cannot have, or a missing ``root`` give a ``ValueError`` naming the field.
    """
    build = _builder(config_value(config, "data.dataset"))
    return build(config, check_split(split))


# ------------------------------------------------------------------ batches
def _check_rank(rank: int, world_size: int) -> None:
    check_positive_int("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size) = [0, {world_size}), got {rank!r}")


def shard_batches(order: Tensor, batch_size: int, drop_last: bool, rank: int = 0, world_size: int = 1) -> list[Tensor]:
    """Rank ``rank``'s batches of the epoch ``order``: ``order[rank::world_size]`` cut into ``batch_size`` pieces.

    With ``drop_last`` the epoch is first cut to a multiple of ``world_size * batch_size``, so every rank gets the
    same number of full batches; otherwise every example is used once and the last batch may be short.
    """
    check_positive_int("batch_size", batch_size)
    _check_rank(rank, world_size)
    if drop_last:
        order = order[: len(order) - len(order) % (batch_size * world_size)]
    return list(order[rank::world_size].split(batch_size))


def prepare_batch(
    batch: Tensor,
    num_levels: int | None,
    generator: torch.Generator | None = None,
    random_flip: bool = False,
    uniform_dequantization: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Raw examples to model input: levels ``k -> k / (L - 1)`` in ``[0, 1]``, a horizontal flip of each image with
    probability 1/2, then uniform dequantization ``(k + u) / L`` (:func:`data_lib.dequantize.uniform_dequantize`)."""
    if num_levels is None:
        if random_flip or uniform_dequantization:
            raise ValueError("random_flip and uniform_dequantization apply to quantized images, not to continuous data")
        return batch.to(dtype)
    x = batch.to(dtype) / (num_levels - 1)
    if random_flip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
    if uniform_dequantization:
        x = uniform_dequantize(x, num_levels, generator)
    return x


def check_labelled(dataset: Dataset) -> Dataset:
    """``dataset`` if it has class labels, else a ``ValueError`` saying which data do (class-conditional training and
    classifiers need them)."""
    if dataset.labels is None:
        raise ValueError(
            f"the {dataset.split} split of {dataset.name} has no class labels; class-conditional models and classifiers "
            "need labelled data: digits, CIFAR10, MNIST (with its label files) or a toy density other than swissroll"
        )
    return dataset


def _load_batches(dataset: Dataset, batches: list[Tensor], num_workers: int) -> Iterator[Tensor]:
    """The raw examples of each index batch; decoded by ``num_workers`` DataLoader workers if > 0."""
    if num_workers <= 0 or isinstance(dataset, InMemoryDataset):
        return (dataset.gather(b) for b in batches)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=num_workers)
    return iter(loader)


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    random_flip: bool = False,
    uniform_dequantization: bool = False,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    with_labels: bool = False,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``rank``'s shard in batches of ``batch_size`` (per rank), prepared by :func:`prepare_batch`;
    with ``with_labels``, pairs ``(batch, labels)`` with the class labels ``(B,)`` int64 of the examples
    (:func:`check_labelled`: the dataset must have them).

    The order is ``torch.randperm`` of ``generator`` (CPU; the same seed on every rank) if ``shuffle``, else the
    dataset order. Flips and dequantization noise come from a generator derived from one draw of ``generator``
    and the rank, so ranks do not share noise and the same seed gives the same batches.
    """
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    noise = torch.Generator().manual_seed(mix_seeds(int(torch.randint(0, 2**62, (1,), generator=generator)), rank))
    if with_labels:
        check_labelled(dataset)
    batches = shard_batches(order, batch_size, drop_last, rank, world_size)
    for indices, raw in zip(batches, _load_batches(dataset, batches, num_workers)):
        x = prepare_batch(raw, dataset.num_levels, noise, random_flip, uniform_dequantization, dtype)
        yield (x, dataset.labels[indices]) if with_labels else x


def training_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    random_flip: bool = False,
    uniform_dequantization: bool = False,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    with_labels: bool = False,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled full batches for training, batch ``s`` for ``s = start_step, start_step + 1, ...``; with
    ``with_labels``, pairs ``(batch, labels)`` as :func:`iterate_batches`.

    Batch ``s`` is a function of ``(seed, s, rank)`` only: epoch ``e = s // steps_per_epoch`` is ordered by a
    permutation seeded with ``(seed, e)`` and the flips/dequantization of step ``s`` use a generator seeded with
    ``(seed, s, rank)``; so a run resumed at step ``s`` sees exactly the batches the uninterrupted run would.
    """
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
    check_positive_int("batch_size", batch_size)
    _check_rank(rank, world_size)
    steps_per_epoch = len(dataset) // (batch_size * world_size)
    if steps_per_epoch == 0:
        raise ValueError(f"the {dataset.split} split of {dataset.name} has {len(dataset)} examples, fewer than one batch of batch_size * world_size = {batch_size * world_size}")
    if with_labels:
        check_labelled(dataset)
    epoch, offset = divmod(start_step, steps_per_epoch)
    step = start_step
    while True:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(mix_seeds(seed, 0, epoch)))
        batches = shard_batches(order, batch_size, True, rank, world_size)[offset:]
        for indices, raw in zip(batches, _load_batches(dataset, batches, num_workers)):
            noise = torch.Generator().manual_seed(mix_seeds(seed, 1, step, rank))
            x = prepare_batch(raw, dataset.num_levels, noise, random_flip, uniform_dequantization, dtype)
            yield (x, dataset.labels[indices]) if with_labels else x
            step += 1
        epoch, offset = epoch + 1, 0


def preprocessing_options(config: Any, train: bool) -> dict[str, bool]:
    """``random_flip`` (training only) and ``uniform_dequantization`` from ``config.data``, for the batch functions."""
    return {
        "random_flip": bool(_data_field(config, "random_flip", False)) and train,
        "uniform_dequantization": bool(_data_field(config, "uniform_dequantization", False)),
    }
