"""``get_dataset`` config checks, batch preparation (levels, flips, uniform dequantization into each level's bin),
seeded and resumable iteration, DDP sharding, and the data scalers."""

import math

import ml_collections
import pytest
import torch

from data_lib import (
    DATASETS,
    InMemoryDataset,
    get_data_inverse_scaler,
    get_data_scaler,
    get_dataset,
    iterate_batches,
    prepare_batch,
    preprocessing_options,
    shard_batches,
    training_batches,
)
from samplers.likelihood import _affine_slope

Z = 5.0  # standard errors allowed in the statistical checks


def data_config(dataset, **fields):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"dataset": dataset, **fields})
    return config


@pytest.fixture(scope="module")
def digits_test():
    return get_dataset(data_config("digits", image_size=8, num_channels=1), "test")


def ids_dataset(n):
    """Continuous 'points' equal to their index, so batches show which examples they hold."""
    return InMemoryDataset("ids", "train", torch.arange(n, dtype=torch.float64)[:, None], None)


# ------------------------------------------------------------------ config validation
def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown config.data.dataset 'SVHN'.*CIFAR10.*MNIST.*CELEBA.*LSUN.*digits.*faces.*photo_patches.*8gaussians"):
        get_dataset(data_config("SVHN"))
    assert {"CIFAR10", "MNIST", "CELEBA", "LSUN", "image_folder", "digits", "faces", "photo_patches", "checkerboard"} <= set(DATASETS)


@pytest.mark.parametrize(
    "dataset, fields, message",
    [
        ("digits", {"image_size": 32}, "image_size must be 8"),
        ("digits", {"num_channels": 3}, "num_channels must be 1"),
        ("faces", {"image_size": 24}, "image_size must be 25"),
        ("photo_patches", {"image_size": 32, "num_channels": 1}, "num_channels must be 3"),
        ("photo_patches", {"image_size": 0}, "image_size must be an integer >= 1"),
        ("CIFAR10", {"image_size": 32, "num_channels": 1, "root": "/nowhere"}, "num_channels must be 3"),
        ("MNIST", {"image_size": 28, "num_channels": 3, "root": "/nowhere"}, "num_channels must be 1"),
        ("CELEBA", {"root": "/nowhere"}, "image_size is required"),
        ("LSUN", {"image_size": 256, "root": "/nowhere"}, "category is required"),
        ("image_folder", {"image_size": 32, "num_channels": 4, "root": "/nowhere"}, "num_channels must be 1 or 3"),
        ("rings", {"dim": 3}, "dim must be 2"),
        ("moons", {"uniform_dequantization": True}, "continuous"),
    ],
)
def test_config_errors_name_the_field(dataset, fields, message):
    with pytest.raises(ValueError, match=message):
        get_dataset(data_config(dataset, **fields))


def test_bad_split():
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'"):
        get_dataset(data_config("digits"), "validation")


def test_toy_splits_are_seeded_and_distinct():
    config = data_config("Checkerboard", num_train=300, num_test=200, seed=5)  # names match case-insensitively
    train, test, again = get_dataset(config, "train"), get_dataset(config, "test"), get_dataset(config, "train")
    assert train.continuous and train.shape == (2,) and (len(train), len(test)) == (300, 200)
    assert torch.equal(train.data, again.data) and not torch.equal(train.data[:200], test.data)


def test_photo_patches_from_config():
    config = data_config("photo_patches", image_size=16, num_channels=3, patches_per_image=2, photo_downscale=2)
    train, test = get_dataset(config, "train"), get_dataset(config, "test")
    assert (len(train), len(test)) == (10, 4) and train.shape == (3, 16, 16) and train.num_levels == 256


# ------------------------------------------------------------------ batch preparation
def test_levels_map_to_k_over_L_minus_1(digits_test):
    x = prepare_batch(digits_test.data, 17, dtype=torch.float64)
    assert torch.equal(x * 16, digits_test.data.double())
    assert x.min() == 0 and x.max() == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dequantized_values_fill_their_level_bins(digits_test, dtype):
    """Level k goes to [k/L, (k+1)/L) (closed on the right in float32, whose rounding can reach the edge); the
    offset u = x L - k is U[0, 1): its mean is 1/2 within Z SE (SE = sqrt(1/12 / n))."""
    k = digits_test.data.double()
    x = prepare_batch(digits_test.data, 17, torch.Generator().manual_seed(0), uniform_dequantization=True, dtype=dtype)
    assert x.dtype == dtype
    u = x.double() * 17 - k
    assert (u >= -1e-12).all() and ((u < 1) if dtype == torch.float64 else (u <= 1 + 1e-6)).all()
    assert abs(float(u.mean()) - 0.5) < Z * math.sqrt(1 / 12 / u.numel())
    assert abs(float(u.var()) - 1 / 12) < 0.01  # 1/12 = 0.0833; the SE of the variance at n = 19008 is ~0.0005


def test_dequantization_uses_the_datasets_level_count():
    """8-bit data: (k + u) / 256 (not the digits' 17 levels)."""
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = prepare_batch(levels, 256, torch.Generator().manual_seed(1), uniform_dequantization=True, dtype=torch.float64)
    assert torch.equal(torch.floor(x * 256), levels.double())


def test_random_flip_mirrors_about_half_the_images(digits_test):
    x = prepare_batch(digits_test.data, 17, torch.Generator().manual_seed(0), random_flip=True)
    plain = prepare_batch(digits_test.data, 17)
    same = (x == plain).flatten(1).all(1)
    mirrored = (x == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    symmetric = (plain == plain.flip(-1)).flatten(1).all(1)
    flipped = mirrored & ~symmetric
    n = int((~symmetric).sum())
    assert abs(float(flipped.sum()) / n - 0.5) < Z * math.sqrt(0.25 / n)


def test_preprocessing_options_flip_only_for_training():
    config = data_config("digits", random_flip=True, uniform_dequantization=True)
    assert preprocessing_options(config, train=True) == {"random_flip": True, "uniform_dequantization": True}
    assert preprocessing_options(config, train=False) == {"random_flip": False, "uniform_dequantization": True}


# ------------------------------------------------------------------ iteration and sharding
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_disjoint_and_cover_the_epoch(drop_last):
    n, batch, world = 103, 4, 3
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [shard_batches(order, batch, drop_last, rank, world) for rank in range(world)]
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen) == len(set(seen.tolist()))  # disjoint
    if drop_last:
        assert len(seen) == n - n % (batch * world) and set(seen.tolist()) == set(order[: len(seen)].tolist())
        assert all(len(s) == len(shards[0]) and all(len(b) == batch for b in s) for s in shards)
        for b in range(len(shards[0])):  # step b of all ranks = step b of one process with batch W * B
            assert set(torch.cat([s[b] for s in shards]).tolist()) == set(order[b * batch * world : (b + 1) * batch * world].tolist())
    else:
        assert set(seen.tolist()) == set(range(n))


def test_iterate_batches_is_seeded_and_covers_the_dataset():
    data = ids_dataset(50)
    run = lambda seed: [b[:, 0].long() for b in iterate_batches(data, 8, torch.Generator().manual_seed(seed))]
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert sorted(torch.cat(a).tolist()) == list(range(50)) and [len(x) for x in a] == [8] * 6 + [2]
    ordered = [b[:, 0].long() for b in iterate_batches(data, 20, shuffle=False, drop_last=True)]
    assert [x.tolist() for x in ordered] == [list(range(20)), list(range(20, 40))]


def test_ranks_get_different_dequantization_noise(digits_test):
    batches = [next(iterate_batches(digits_test, 16, torch.Generator().manual_seed(0), rank=r, world_size=2, uniform_dequantization=True)) for r in (0, 1)]
    offsets = [b.double() * 17 - torch.floor(b.double() * 17) for b in batches]
    assert not torch.equal(offsets[0], offsets[1])


def test_training_batches_resume_exactly(digits_test):
    """Batch s depends on (seed, s, rank) only: a stream started at step 7 continues the one started at 0,
    across epoch boundaries (297 // 64 = 4 steps per epoch) and with flips and dequantization noise."""
    options = {"random_flip": True, "uniform_dequantization": True}
    stream = training_batches(digits_test, 64, seed=3, **options)
    full = [next(stream) for _ in range(12)]
    resumed = training_batches(digits_test, 64, seed=3, start_step=7, **options)
    assert all(torch.equal(next(resumed), full[s]) for s in range(7, 12))
    assert not torch.equal(full[0], full[4])  # a new epoch is a new order


def test_training_batches_epochs_and_ddp_union():
    data = ids_dataset(30)
    single = training_batches(data, 10, seed=0)
    ranks = [training_batches(data, 5, seed=0, rank=r, world_size=2) for r in (0, 1)]
    epoch = []
    for _ in range(3):
        step = next(single)[:, 0].long()
        union = torch.cat([next(r)[:, 0].long() for r in ranks])
        assert sorted(union.tolist()) == sorted(step.tolist())
        epoch += step.tolist()
    assert sorted(epoch) == list(range(30))
    with pytest.raises(ValueError, match="fewer than one batch"):
        next(training_batches(data, 16, seed=0, world_size=2))
    with pytest.raises(ValueError, match="rank must be"):
        next(training_batches(data, 4, seed=0, rank=2, world_size=2))


def test_labels_travel_with_their_examples():
    """With with_labels every batch comes with the labels of exactly its examples (ids dataset: label = 7 id % 5),
    for one epoch, the endless stream, its resumption and every rank; the examples are those of the unlabelled
    stream. A dataset without labels is refused before the first batch, naming the data that have them."""
    data = ids_dataset(40)
    data.labels = (7 * torch.arange(40)) % 5
    check = lambda x, y: torch.equal(y, (7 * x[:, 0].long()) % 5)  # noqa: E731
    pairs = list(iterate_batches(data, 8, torch.Generator().manual_seed(0), with_labels=True))
    assert all(check(x, y) for x, y in pairs)
    plain = list(iterate_batches(data, 8, torch.Generator().manual_seed(0)))
    assert all(torch.equal(x, p) for (x, _), p in zip(pairs, plain))
    stream = training_batches(data, 6, seed=2, start_step=5, rank=1, world_size=2, with_labels=True)
    reference = training_batches(data, 6, seed=2, start_step=5, rank=1, world_size=2)
    for _ in range(8):
        x, y = next(stream)
        assert check(x, y) and torch.equal(x, next(reference))
    with pytest.raises(ValueError, match="no class labels.*digits"):
        next(training_batches(ids_dataset(40), 6, seed=0, with_labels=True))


# ------------------------------------------------------------------ scalers
@pytest.mark.parametrize("centered", [True, False])
def test_scaler_and_inverse(centered):
    config = data_config("digits", centered=centered)
    scaler, inverse = get_data_scaler(config), get_data_inverse_scaler(config)
    x = torch.arange(17, dtype=torch.float64) / 16
    y = scaler(x)
    assert torch.equal(inverse(y), x)
    assert (y.min(), y.max()) == ((-1.0, 1.0) if centered else (0.0, 1.0))
    assert _affine_slope(inverse, x) == (0.5 if centered else 1.0)  # what bits_per_dim adds as log2|a|


def test_toy_points_are_not_rescaled():
    config = data_config("8gaussians", centered=True)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(get_data_scaler(config)(x), x) and torch.equal(get_data_inverse_scaler(config)(x), x)
