"""Real-dataset readers (``data_lib.files`` through ``get_dataset``) on tiny files written here in each format:
exact pixel values after the round trip, the splits, the reference's crops, and the errors for missing data."""

import gzip
import pickle

import ml_collections
import numpy as np
import pytest
import torch
from PIL import Image

from data_lib import get_dataset
from data_lib.files import read_idx

RNG = np.random.default_rng(0)


def data_config(dataset, root=None, **fields):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"dataset": dataset, **fields})
    if root is not None:
        config.data.root = str(root)
    return config


def coordinate_image(h, w):
    """RGB uint8 (h, w, 3) whose red channel is the row, green the column, blue 7: positions can be read back."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)


# ------------------------------------------------------------------ CIFAR-10
def write_cifar_batch(path, images_hwc, labels=None):
    """The python CIFAR-10 format: ``data`` rows are the R, G, B 32x32 planes, row-major; bytes keys; labels a list."""
    rows = np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)]) for im in images_hwc]).astype(np.uint8)
    labels = [0] * len(rows) if labels is None else [int(v) for v in labels]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": rows, b"filenames": [b"a"] * len(rows)}, f, protocol=2)


@pytest.fixture
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = {name: RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    for i, (name, ims) in enumerate(images.items()):
        write_cifar_batch(folder / name, ims, labels=[(2 * i + j) % 10 for j in range(len(ims))])
    return tmp_path, images


def test_cifar10_pixels_round_trip(cifar_root):
    root, images = cifar_root
    train = get_dataset(data_config("CIFAR10", root, image_size=32, num_channels=3), "train")
    expected = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]).transpose(0, 3, 1, 2)
    assert train.num_levels == 256 and train.shape == (3, 32, 32)
    np.testing.assert_array_equal(train.data.numpy(), expected)
    test = get_dataset(data_config("CIFAR10", root / "cifar-10-batches-py", image_size=32), "test")  # root = the folder itself
    np.testing.assert_array_equal(test.data.numpy(), images["test_batch"].transpose(0, 3, 1, 2))
    # the class labels of each batch, in file order: batch i holds (2 i + j) % 10
    assert train.labels.tolist() == [(2 * i + j) % 10 for i in range(5) for j in range(2)]
    assert test.labels.tolist() == [0, 1] and test.labels.dtype == torch.int64


def test_cifar10_resize_keeps_constants_and_means(cifar_root):
    root, _ = cifar_root
    folder = root / "cifar-10-batches-py"
    flat = np.full((1, 32, 32, 3), 0, np.uint8)
    flat[..., 0], flat[..., 1], flat[..., 2] = 13, 140, 251
    write_cifar_batch(folder / "test_batch", np.concatenate([flat, RNG.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)]))
    small = get_dataset(data_config("CIFAR10", root, image_size=16), "test").data
    assert small.shape == (2, 3, 16, 16) and small.dtype == torch.uint8
    assert torch.equal(small[0], torch.tensor([13, 140, 251], dtype=torch.uint8)[:, None, None].expand(3, 16, 16))
    original = get_dataset(data_config("CIFAR10", root, image_size=32), "test").data
    # an antialiased 2x shrink averages 2x2 blocks: the image mean is kept to within rounding and edge effects
    assert abs(float(small[1].double().mean() - original[1].double().mean())) < 2.0


def test_cifar10_missing_batch_is_named(cifar_root):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        get_dataset(data_config("CIFAR10", root, image_size=32), "train")


def test_cifar10_corrupt_batch_is_named(cifar_root):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch"):
        get_dataset(data_config("CIFAR10", root, image_size=32), "test")


# ------------------------------------------------------------------ MNIST
def idx_bytes(array, code):
    """The idx format: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_mnist_idx_pixels_round_trip(tmp_path, compressed):
    images = {"train": RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8), "t10k": RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)}
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, ims in images.items():
        name = raw / f"{prefix}-images-idx3-ubyte"
        if compressed:
            with gzip.open(str(name) + ".gz", "wb") as f:
                f.write(idx_bytes(ims, 0x08))
        else:
            name.write_bytes(idx_bytes(ims, 0x08))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(len(ims), dtype=np.uint8) * 3 % 10, 0x08))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = get_dataset(data_config("MNIST", tmp_path, image_size=28, num_channels=1), split)
        assert data.shape == (1, 28, 28) and data.num_levels == 256
        np.testing.assert_array_equal(data.data[:, 0].numpy(), images[prefix])
        assert data.labels.tolist() == [3 * i % 10 for i in range(len(images[prefix]))]
    (raw / "t10k-labels-idx1-ubyte").unlink()  # labels are optional: the images alone load, without labels
    assert get_dataset(data_config("MNIST", tmp_path, image_size=28, num_channels=1), "test").labels is None


def test_idx_reads_big_endian_types(tmp_path):
    values = RNG.integers(-(2**31), 2**31 - 1, (4, 3), dtype=np.int64).astype(np.int32)
    (tmp_path / "x.idx").write_bytes(idx_bytes(values, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), values)
    (tmp_path / "bad.idx").write_bytes(idx_bytes(values, 0x0C)[:-1])
    with pytest.raises(ValueError, match="bad.idx"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic.idx")


# ------------------------------------------------------------------ CelebA
def celeba_folder(tmp_path, numbers, ext=".png"):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for number in numbers:
        Image.fromarray(coordinate_image(218, 178)).save(folder / f"{number:06d}{ext}")
    return tmp_path


def test_celeba_central_140_crop_and_official_split(tmp_path):
    root = celeba_folder(tmp_path, [1, 162770, 162771, 182637, 182638])
    train = get_dataset(data_config("CELEBA", root, image_size=140), "train")
    test = get_dataset(data_config("CELEBA", root, image_size=140), "test")
    assert [p.stem for p in train.paths] == ["000001", "162770"]
    assert [p.stem for p in test.paths] == ["162771", "182637"]  # the validation partition, as the reference
    image = train[0]
    rows, cols = torch.meshgrid(torch.arange(140), torch.arange(140), indexing="ij")
    assert torch.equal(image[0], (39 + rows).to(torch.uint8))  # top = (218 - 140) // 2
    assert torch.equal(image[1], (19 + cols).to(torch.uint8))  # left = (178 - 140) // 2
    assert torch.equal(image[2], torch.full((140, 140), 7, dtype=torch.uint8))


def test_celeba_partition_file_and_resize(tmp_path):
    root = celeba_folder(tmp_path, [1, 2, 3], ext=".jpg")
    (root / "list_eval_partition.txt").write_text("000001.jpg 1\n000002.jpg 0\n000003.jpg 2\n")
    train = get_dataset(data_config("CELEBA", root, image_size=35), "train")
    test = get_dataset(data_config("CELEBA", root, image_size=35), "test")
    assert [p.name for p in train.paths] == ["000002.jpg"] and [p.name for p in test.paths] == ["000001.jpg"]
    image = train.gather(torch.tensor([0]))[0].double()
    # a 4x shrink of the crop: red ~ the mean row of each 4-row band, 39 + 4 i + 1.5 (JPEG error of a few levels)
    expected_red = 39 + 4 * torch.arange(35, dtype=torch.float64) + 1.5
    assert (image[0].mean(1) - expected_red).abs().max() < 3.0
    with pytest.raises(ValueError, match="image_size must be <= 140"):
        get_dataset(data_config("CELEBA", root, image_size=256), "train")


# ------------------------------------------------------------------ LSUN
def test_lsun_exported_webp_folders(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        nested = tmp_path / f"church_outdoor_{split}" / "a" / "b"
        nested.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(coordinate_image(128, 160)).save(nested / f"{i}.webp", lossless=True)
    config = data_config("LSUN", tmp_path, image_size=128, category="church_outdoor")
    train, test = get_dataset(config, "train"), get_dataset(config, "test")
    assert (len(train), len(test)) == (3, 2)
    image = test[1]  # 128 path: shorter side already 128, then the central 128 x 128 crop: left = 16
    assert torch.equal(image[1], (16 + torch.arange(128)).to(torch.uint8).expand(128, 128))
    assert torch.equal(image[0], torch.arange(128).to(torch.uint8)[:, None].expand(128, 128))
    config.data.image_size = 64  # other sizes: the centred 128 x 128 square resized
    assert get_dataset(config, "train")[0].shape == (3, 64, 64)


def test_lsun_lmdb_is_not_read(tmp_path):
    (tmp_path / "bedroom_train_lmdb").mkdir()
    (tmp_path / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"")
    with pytest.raises(ValueError, match="lmdb"):
        get_dataset(data_config("LSUN", tmp_path, image_size=256, category="bedroom"), "train")


# ------------------------------------------------------------------ image folders
def test_image_folder_every_tenth_file_is_test_and_pixels_round_trip(tmp_path):
    values = RNG.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8)
    for i, image in enumerate(values):
        sub = tmp_path / ("x" if i < 10 else "y")
        sub.mkdir(exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:02d}.png")
    config = data_config("image_folder", tmp_path, image_size=12, num_channels=3)
    train, test = get_dataset(config, "train"), get_dataset(config, "test")
    assert [int(p.stem) for p in test.paths] == [9, 19]
    assert [int(p.stem) for p in train.paths] == [i for i in range(20) if i not in (9, 19)]
    np.testing.assert_array_equal(test.gather(torch.tensor([0, 1])).numpy(), values[[9, 19]].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(train.gather(torch.arange(18)).numpy(), values[[i for i in range(20) if i not in (9, 19)]].transpose(0, 3, 1, 2))


def test_image_folder_train_test_subfolders_greyscale_and_centre_square(tmp_path):
    grey = RNG.integers(0, 256, (10, 16), dtype=np.uint8)  # 10 rows, 16 columns: the centred square drops 3 columns a side
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        Image.fromarray(grey).save(tmp_path / split / "g.png")
    data = get_dataset(data_config("image_folder", tmp_path, image_size=10, num_channels=1), "test")
    assert data.shape == (1, 10, 10)
    np.testing.assert_array_equal(data[0][0].numpy(), grey[:, 3:13])


def test_unreadable_image_is_named_when_the_dataset_is_opened(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read image file .*broken.png"):
        get_dataset(data_config("FFHQ", tmp_path, image_size=8), "train")


@pytest.mark.parametrize(
    "dataset, fields",
    [("CIFAR10", {"image_size": 32}), ("MNIST", {"image_size": 28, "num_channels": 1}), ("CELEBA", {"image_size": 64}),
     ("LSUN", {"image_size": 256, "category": "bedroom"}), ("image_folder", {"image_size": 32}), ("CelebAHQ", {"image_size": 256})],
)
def test_missing_data_names_the_root_and_what_belongs_there(tmp_path, dataset, fields):
    with pytest.raises(ValueError, match=r"config\.data\.root = .*nowhere.*expected"):
        get_dataset(data_config(dataset, tmp_path / "nowhere", **fields), "train")
    with pytest.raises(ValueError, match=r"config\.data\.root must name"):
        get_dataset(data_config(dataset, None, **fields), "train")


def test_worker_processes_decode_the_same_batches(tmp_path):
    """Lazily decoded folders may use DataLoader workers; the batches (order, flips, noise) do not change."""
    from data_lib import iterate_batches

    for i in range(12):
        Image.fromarray(RNG.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    data = get_dataset(data_config("image_folder", tmp_path, image_size=9), "train")
    runs = [
        list(iterate_batches(data, 4, torch.Generator().manual_seed(0), random_flip=True, uniform_dequantization=True, num_workers=workers))
        for workers in (0, 1)
    ]
    assert len(runs[0]) == 3 and all(torch.equal(a, b) for a, b in zip(*runs))
