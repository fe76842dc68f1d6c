"""Datasets bundled with scikit-learn / scikit-image (``data_lib.embedded``): exact pixel values against the
packages' own arrays, level counts, fixed splits, and photo patches traced back to their source photo."""

import numpy as np
import pytest
import skimage.data
import torch
from sklearn.datasets import load_digits

from data_lib import embedded
from data_lib.embedded import PHOTOS, digits, faces, load_photo, photo_patches


@pytest.fixture(scope="module")
def digit_splits():
    return digits("train"), digits("test")


def test_digits_are_the_sklearn_digits_with_17_levels_and_a_fixed_split(digit_splits):
    train, test = digit_splits
    reference = load_digits().images  # (1797, 8, 8), integers 0..16
    assert (len(train), len(test)) == (1500, 297)
    assert train.num_levels == test.num_levels == 17 and train.shape == (1, 8, 8)
    both = torch.cat([train.data, test.data])[:, 0].numpy()
    np.testing.assert_array_equal(both, reference)  # first 1500 train, the rest test, in order
    assert sorted(np.unique(both).tolist()) == list(range(17))  # all 17 levels occur


def test_digit_labels_are_the_sklearn_targets_of_each_split(digit_splits):
    train, test = digit_splits
    target = load_digits().target
    assert train.labels.dtype == test.labels.dtype == torch.int64
    np.testing.assert_array_equal(torch.cat([train.labels, test.labels]).numpy(), target)  # same order as the images
    assert faces("test").labels is None  # datasets without classes say so
    with pytest.raises(ValueError, match="labels"):
        embedded.InMemoryDataset("digits", "test", test.data, 17, test.labels[:-1])


def test_digit_test_split_holds_every_class():
    counts = np.bincount(load_digits().target[1500:], minlength=10)
    assert counts.min() >= 27


def test_faces_are_the_lfw_faces_rounded_to_8_bits():
    train, test = faces("train"), faces("test")
    original = skimage.data.lfw_subset()[:100]  # float64 in [0, 1], not quantized
    assert (len(train), len(test)) == (80, 20) and train.num_levels == 256 and train.shape == (1, 25, 25)
    levels = torch.cat([train.data, test.data])[:, 0].numpy().astype(np.float64)
    np.testing.assert_array_equal(levels, np.rint(original * 255))
    assert np.abs(levels / 255 - original).max() <= 0.5 / 255 + 1e-12
    assert len(np.unique(original)) > 256  # why the rounding is needed: the stored faces are continuous


def test_faces_train_and_test_share_no_image():
    train, test = faces("train").data.flatten(1), faces("test").data.flatten(1)
    assert not (train[:, None] == test[None]).all(-1).any()


def locate(patch, photo):
    """Positions ``(top, left)`` where ``patch`` (3, s, s) occurs in ``photo`` (H, W, 3)."""
    s = patch.shape[1]
    p = patch.permute(1, 2, 0).numpy()
    tops, lefts = np.nonzero((photo[: photo.shape[0] - s + 1, : photo.shape[1] - s + 1] == p[0, 0]).all(-1))
    return [(t, l) for t, l in zip(tops, lefts) if np.array_equal(photo[t : t + s, l : l + s], p)]


@pytest.fixture(scope="module")
def photos():
    return {name: load_photo(name) for split in ("train", "test") for name in PHOTOS[split]}


def test_photos_load_offline_as_8bit_rgb(photos):
    assert set(PHOTOS["train"]).isdisjoint(PHOTOS["test"])
    for name, image in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert len(np.unique(image)) > 200, name  # natural photos using (nearly) all 256 levels


@pytest.mark.parametrize("split", ["train", "test"])
def test_patches_come_from_their_split_photos_only(photos, split):
    per_image = 3
    data = photo_patches(split, size=16, patches_per_image=per_image, seed=1)
    assert data.num_levels == 256 and data.data.dtype == torch.uint8 and len(data) == per_image * len(PHOTOS[split])
    other = "test" if split == "train" else "train"
    for i, patch in enumerate(data.data):
        source = PHOTOS[split][i // per_image]  # patches_per_image per photo, in PHOTOS order
        assert locate(patch, photos[source]), f"patch {i} not found in {source}"
        assert not any(locate(patch, photos[name]) for name in PHOTOS[other]), f"patch {i} also in a {other} photo"


def test_patches_are_deterministic_given_the_seed():
    a, b, c = (photo_patches("test", 8, 5, seed=s).data for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_downscale_is_a_rounded_block_mean():
    photo = load_photo("coffee")
    shrunk = embedded._shrink(photo, 2).astype(np.float64)
    h, w = photo.shape[0] // 2, photo.shape[1] // 2
    blocks = photo[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean((1, 3))
    assert shrunk.shape == blocks.shape and np.abs(shrunk - blocks).max() <= 0.5 + 1e-9


def test_patch_arguments_are_checked():
    with pytest.raises(ValueError, match="exceeds"):
        photo_patches("test", size=400, patches_per_image=1)
    with pytest.raises(ValueError, match="patches_per_image"):
        photo_patches("train", patches_per_image=0)
    with pytest.raises(ValueError, match="split"):
        digits("validation")
