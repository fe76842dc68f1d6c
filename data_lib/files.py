"""Real datasets read from a local folder (``config.data.root``); nothing is ever downloaded.

torchvision is not used: PyPI's torchvision wheels are CUDA builds whose compiled ops need ``libtorch_cuda``
and fail to import beside the CPU build of torch this project pins. The formats are simple, so they are read
here with numpy and Pillow:

* ``CIFAR10``: the python version, ``cifar-10-batches-py/`` with the pickled batches ``data_batch_1`` ..
  ``data_batch_5`` (train) and ``test_batch`` (test); each a dict whose ``data`` is uint8 ``(10000, 3072)``, the
  red, green and blue 32 x 32 planes of an image in row-major order.
* ``MNIST``: the idx files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (optionally ``.gz``; in
  ``root``, ``root/raw`` or ``root/MNIST/raw``). An idx file is two zero bytes, a type code (``0x08`` = uint8),
  the number of dimensions, each dimension as a big-endian uint32, then the big-endian data.
* ``CELEBA``: ``img_align_celeba/*.jpg``. The split is that of ``list_eval_partition.txt`` if present, else the
  official one by file number (1-162770 train, 162771-182637 validation, the rest test); like the reference,
  ``test`` means the validation partition. Preprocessing as the reference: central 140 x 140 crop, then shrink
  to ``image_size``.
* ``LSUN``: a category exported to image files (the ``export`` command of the LSUN tools writes ``.webp``),
  ``{category}_train/`` and ``{category}_val/`` (``test``). The lmdb databases themselves are not read.
  Preprocessing as the reference: for ``image_size == 128`` shrink then central crop, else the largest centred
  square resized (bicubic).
* any image folder (``image_folder``, and ``FFHQ``/``CelebAHQ`` exported to images; their tfrecords are not
  read): PNG/JPEG/WebP/BMP files found recursively, the largest centred square resized to ``image_size``. With
  ``train/`` and ``test/`` (or ``val/``) subfolders these are the splits; otherwise every 10th file in sorted
  order (index ``i % 10 == 9``) is ``test`` and the rest ``train``.

Files are read without running their code: a CIFAR-10 batch is unpickled by :class:`CifarUnpickler`, which admits
only the few numpy globals an array needs, so a crafted batch that names any other (``os.system``, ...) is refused.
Image files (CelebA, LSUN, image folders) are all decoded when the dataset is first opened, so that a truncated or
corrupt file stops the run before training with its name, rather than hours into it; with ``skip_bad=True``
(``config.data.skip_bad_images``) such files are left out instead and their number is logged as a warning. This
costs about a millisecond per image and core (JPEGs are decoded at an eighth of their size, which still reads every
byte of them), once: the files that decoded are remembered by size and modification time in the toolkit's cache.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import gzip
import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from base_lib.files import atomic_write, cache_dir

from .base import ImageFileDataset, InMemoryDataset, check_split
from .transforms import LoadCelebA, LoadCropResize, LoadResizeSmallCrop, list_images, resize_levels

CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
MNIST_PREFIX = {"train": "train", "test": "t10k"}
CELEBA_PARTITIONS = {"train": 0, "test": 1}  # list_eval_partition.txt codes; "test" is the reference's validation
CELEBA_LAST_TRAIN, CELEBA_LAST_VALIDATION = 162770, 182637
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FOLDER_TEST_EVERY = 10
CHECK_THREADS = 8  # at most this many threads decode the images of a dataset being opened

LOGGER = logging.getLogger(__name__)


def missing(root: Path | str, expected: str) -> ValueError:
    """The error for a dataset that is not where ``config.data.root`` says."""
    return ValueError(f"config.data.root = {str(root)!r} does not hold the dataset: expected {expected}")


# ------------------------------------------------------------------ image files
def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as an image (truncated, corrupt, not an image), or ``None`` if it decodes."""
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (1, 1))  # JPEG: decode at 1/8 scale, which still reads every byte; others: no-op
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return str(err) or type(err).__name__
    return None


def _verified_record(where: Path) -> Path:
    """Where the files of ``where`` that decoded are remembered, with their sizes and modification times."""
    key = hashlib.sha256(str(where.resolve()).encode("utf-8")).hexdigest()[:24]
    return cache_dir() / "verified-images" / f"{key}.json"


def _fingerprint(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _read_verified(record: Path) -> dict[str, list[int]]:
    try:
        verified = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return verified if isinstance(verified, dict) else {}


def readable_images(files: list[Path], where: Path, skip_bad: bool = False) -> list[Path]:
    """``files`` once each has been decoded (:func:`image_problem`, in threads). An unreadable one raises a one-line
    ``ValueError`` naming it and the cause, or with ``skip_bad`` is left out, their number logged as a warning.

    The files that decoded are remembered in the toolkit's cache (:func:`base_lib.files.cache_dir`) with their size
    and modification time, so a dataset is decoded in full once: later opens decode only files that are new or
    changed since (a file rewritten in place with the same size and time is not noticed)."""
    record = _verified_record(where)
    verified = _read_verified(record)
    fingerprints = [_fingerprint(path) for path in files]
    todo = [i for i, (path, fingerprint) in enumerate(zip(files, fingerprints))
            if fingerprint is None or verified.get(str(path)) != fingerprint]
    problems: list[str | None] = [None] * len(files)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(CHECK_THREADS, os.cpu_count() or 1)) as pool:
        for i, problem in zip(todo, pool.map(image_problem, [files[i] for i in todo])):
            problems[i] = problem
    if todo:
        good = {str(path): fingerprint for path, fingerprint, problem in zip(files, fingerprints, problems)
                if problem is None and fingerprint is not None}
        try:
            text = json.dumps({**verified, **good})
            atomic_write(record, lambda file: file.write(text.encode("utf-8")))
        except OSError as error:  # a cache that cannot be written only costs the decoding again next time
            LOGGER.warning("cannot remember the verified images of %s in %s: %s", where, record, error)
    bad = [(path, problem) for path, problem in zip(files, problems) if problem is not None]
    if not bad:
        return files
    (first, cause), others = bad[0], len(bad) - 1
    more = f"; {others} more unreadable image file(s) under {where}" if others else ""
    if not skip_bad:
        raise ValueError(
            f"cannot read image file {first}: {cause}{more} (set config.data.skip_bad_images=True to leave them out)"
        )
    LOGGER.warning("left out %d unreadable image file(s) of %d under %s, e.g. %s: %s", len(bad), len(files), where, first, cause)
    return [path for path, problem in zip(files, problems) if problem is None]


# ------------------------------------------------------------------ CIFAR-10
def _cifar_dir(root: Path) -> Path:
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
            return folder
    raise missing(root, "the python version of CIFAR-10, cifar-10-batches-py/{data_batch_1..5, test_batch}, in it or as it")


_RECONSTRUCT = np.zeros(1, np.uint8).__reduce__()[0]  # what numpy names to rebuild an array (pickle protocols 0-4)
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # and with protocol 5


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (always latin-1); other codecs are refused."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"it encodes bytes with the codec {encoding!r}; a CIFAR-10 batch uses latin-1")
    return codecs.encode(text, "latin1", errors)


#: the globals a CIFAR-10 batch may name, and what each stands for
CIFAR_PICKLE_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 batches: a dict of bytes or str keys, lists of ints and bytes, and a numpy uint8 array.

    Unpickling calls whatever globals the file names, so it admits only :data:`CIFAR_PICKLE_GLOBALS`: those that
    rebuild a numpy array, under the module names numpy 1 and 2 write (``numpy.core`` / ``numpy._core``), and
    ``_codecs.encode``, with which protocol-2 pickles written by Python 3 store bytes. Any other global is refused
    before it is imported.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = CIFAR_PICKLE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names the global {module}.{name}, which a CIFAR-10 batch does not hold (not loaded: it could run code)"
            )
        return found


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One pickled CIFAR-10 batch: uint8 images ``(N, 3, 32, 32)`` and int64 class labels ``(N,)`` (``None`` if the
    batch has no ``labels`` entry). Read with :class:`CifarUnpickler`: a file that names other globals is refused."""
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(f"cannot read the CIFAR-10 batch {path}: {err}") from None
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise ValueError(f"{path}: 'labels' must hold {data.shape[0]} classes in 0..9, got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10(root: Path | str, split: str, image_size: int = 32) -> InMemoryDataset:
    """CIFAR-10 images ``(N, 3, image_size, image_size)`` (resized with antialiasing if ``image_size != 32``)."""
    folder = _cifar_dir(Path(root))
    paths = [folder / name for name in CIFAR_FILES[check_split(split)]]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise missing(root, f"the CIFAR-10 {split} batches; missing {', '.join(absent)} in {folder}")
    batches = [read_cifar_batch(p) for p in paths]
    levels = torch.from_numpy(np.concatenate([images for images, _ in batches]))
    labels = None if any(y is None for _, y in batches) else torch.from_numpy(np.concatenate([y for _, y in batches]))
    return InMemoryDataset("CIFAR10", split, resize_levels(levels, image_size), 256, labels)


# ------------------------------------------------------------------ MNIST
def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a numpy array of its declared type and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read the idx file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(shape) != ndim or len(raw) != expected:
        raise ValueError(f"{path}: idx header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _mnist_file(root: Path, split: str) -> Path:
    prefix = MNIST_PREFIX[split]
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"):
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    return folder / name
    raise missing(root, f"the MNIST idx file {prefix}-images-idx3-ubyte[.gz] in it, in raw/ or in MNIST/raw/")


def _mnist_labels(images_path: Path, count: int) -> torch.Tensor | None:
    """The digits of the idx label file beside ``images_path`` (``...-labels-idx1-ubyte[.gz]``), or ``None`` if absent."""
    name = images_path.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte").replace("-images.idx3-ubyte", "-labels.idx1-ubyte")
    candidates = [images_path.with_name(name), images_path.with_name(name.removesuffix(".gz")), images_path.with_name(name.removesuffix(".gz") + ".gz")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    labels = read_idx(path)
    if labels.shape != (count,) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise ValueError(f"{path}: MNIST labels must hold {count} digits 0..9, got shape {labels.shape}")
    return torch.from_numpy(labels.astype(np.int64))


def mnist(root: Path | str, split: str, image_size: int = 28) -> InMemoryDataset:
    """MNIST images ``(N, 1, image_size, image_size)`` (resized with antialiasing if ``image_size != 28``), with
    their ``labels`` when the label file ``{train,t10k}-labels-idx1-ubyte[.gz]`` lies beside the images."""
    path = _mnist_file(Path(root), check_split(split))
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{path}: MNIST images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    levels = resize_levels(torch.from_numpy(images[:, None].copy()), image_size)
    return InMemoryDataset("MNIST", split, levels, 256, _mnist_labels(path, images.shape[0]))


# ------------------------------------------------------------------ CelebA
def _celeba_partition(root: Path, files: list[Path]) -> list[int]:
    """The partition code (0 train, 1 validation, 2 test) of each file."""
    listing = next((p for p in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt") if p.is_file()), None)
    if listing is not None:
        codes = dict(line.split()[:2] for line in listing.read_text().splitlines() if len(line.split()) >= 2)
        return [int(codes.get(p.name, -1)) for p in files]
    parts = []
    for p in files:
        match = re.fullmatch(r"(\d+)", p.stem)
        if match is None:
            raise ValueError(f"{p}: CelebA files are numbered (000001.jpg); without list_eval_partition.txt the split needs the numbers")
        number = int(match.group(1))
        parts.append(0 if number <= CELEBA_LAST_TRAIN else 1 if number <= CELEBA_LAST_VALIDATION else 2)
    return parts


def celeba(root: Path | str, split: str, image_size: int = 64, skip_bad: bool = False) -> ImageFileDataset:
    """CelebA (aligned) with the reference's preprocessing, decoded lazily: ``(3, image_size, image_size)``; every
    file of the split checked first (:func:`readable_images`)."""
    root = Path(root)
    folder = root / "img_align_celeba"
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        raise missing(root, "img_align_celeba/ with the aligned CelebA JPEGs (and optionally list_eval_partition.txt)")
    if image_size > LoadCelebA.CROP:
        raise ValueError(f"config.data.image_size must be <= {LoadCelebA.CROP} for CELEBA (the central crop), got {image_size}")
    wanted = CELEBA_PARTITIONS[check_split(split)]
    chosen = [p for p, part in zip(files, _celeba_partition(root, files)) if part == wanted]
    if not chosen:
        raise missing(root, f"CelebA images of the {split} partition ({wanted}) in {folder}")
    chosen = readable_images(chosen, folder, skip_bad)
    if not chosen:
        raise missing(root, f"readable CelebA images of the {split} partition ({wanted}) in {folder}")
    return ImageFileDataset("CELEBA", split, chosen, LoadCelebA(image_size), (3, image_size, image_size))


# ------------------------------------------------------------------ LSUN
def lsun(root: Path | str, split: str, category: str, image_size: int = 256, skip_bad: bool = False) -> ImageFileDataset:
    """An LSUN category exported to image files, ``{category}_train`` / ``{category}_val``, decoded lazily; every
    file checked first (:func:`readable_images`)."""
    root = Path(root)
    folder = root / f"{category}_{'train' if check_split(split) == 'train' else 'val'}"
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        lmdb = Path(f"{folder}_lmdb")
        hint = f" ({lmdb} is an lmdb database, which is not read: export it to images with the LSUN tools)" if lmdb.exists() else ""
        raise missing(root, f"{folder.name}/ with the exported LSUN {category} images{hint}")
    files = readable_images(files, folder, skip_bad)
    if not files:
        raise missing(root, f"{folder.name}/ with readable LSUN {category} images")
    load = LoadResizeSmallCrop(image_size) if image_size == 128 else LoadCropResize(image_size, 3)
    return ImageFileDataset("LSUN", split, files, load, (3, image_size, image_size))


# ------------------------------------------------------------------ image folders
def image_folder(
    root: Path | str, split: str, image_size: int, num_channels: int = 3, name: str = "image_folder", skip_bad: bool = False,
) -> ImageFileDataset:
    """Every image under ``root`` (split by ``train/``, ``test/``|``val/`` subfolders or every 10th file), square-cropped
    and resized; every file of the split checked first (:func:`readable_images`). The split is made before files
    are left out, so leaving out a bad file does not move the others between ``train`` and ``test``."""
    root = Path(root)
    check_split(split)
    if not root.is_dir():
        raise missing(root, "a folder of PNG/JPEG images (optionally in train/ and test/ subfolders)")
    if (root / "train").is_dir():
        sub = "train" if split == "train" else next((s for s in ("test", "val") if (root / s).is_dir()), None)
        if sub is None:
            raise missing(root, "a test/ (or val/) folder beside train/")
        files = list_images(root / sub)
    else:
        every = list_images(root)
        files = [p for i, p in enumerate(every) if (i % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1) == (split == "test")]
    files = readable_images(files, root, skip_bad)
    if not files:
        raise missing(root, f"readable PNG/JPEG/WebP/BMP images for the {split} split")
    return ImageFileDataset(name, split, files, LoadCropResize(image_size, num_channels), (num_channels, image_size, image_size))
