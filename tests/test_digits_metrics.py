"""The digits classifier (trained here, reproducibly, cached) and its metrics: test accuracy, determinism, the cache,
"digits FID" of real / blurred / noise digits against the test split, class coverage, and the statistics command.

Measured (classifier v1, default spec, one CPU thread): test accuracy 0.9697 (288 / 297); digits FID against the
test split: all 1500 train digits 8.7, the train digits blurred by a 3x3 box filter 187, uniform noise 199."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data_lib
from sample_quality import DigitsClassifierSpec, class_coverage, digits_metrics, digits_reference_statistics, load_digits_classifier, load_statistics
from sample_quality import digits as digits_module
from sample_quality.digits import CLASSIFIER_VERSION, default_classifier_path, random_shift, train_digits_classifier
from sample_quality.features import levels_to_uint8
from sample_quality.stats import main as stats_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICK = DigitsClassifierSpec(epochs=1)  # enough to test determinism and the cache in well under a second


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """$XDG_CACHE_HOME pointed at a fresh folder for this module."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("xdg")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def classifier(cache):
    return load_digits_classifier()  # trains (about 10 s) and caches under $XDG_CACHE_HOME


@pytest.fixture(scope="module")
def test_split():
    return data_lib.digits("test")


def predictions(classifier, dataset):
    with torch.no_grad():
        return classifier.extract(levels_to_uint8(dataset.data, dataset.num_levels))[1].argmax(1)


def test_classifier_is_accurate_on_the_test_split(classifier, test_split):
    assert classifier.test_accuracy > 0.95
    accuracy = float((predictions(classifier, test_split) == test_split.labels).double().mean())
    assert accuracy > 0.95  # through the 8-bit feature-extractor path too


def test_classifier_is_cached_by_version_and_hyper_parameters(classifier, cache, monkeypatch, tmp_path):
    path = default_classifier_path()
    assert path.parent == cache / "score-sde-toolkit" and path.is_file()
    assert f"-v{CLASSIFIER_VERSION}-" in path.name and DigitsClassifierSpec().cache_key() in path.name
    assert DigitsClassifierSpec(epochs=21).cache_key() != DigitsClassifierSpec().cache_key()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically: no temporary left

    def no_training(spec):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(digits_module, "train_digits_classifier", no_training)
    loaded = load_digits_classifier()
    assert loaded.test_accuracy == classifier.test_accuracy
    for name, tensor in classifier.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    monkeypatch.undo()
    # a file of other settings is replaced by a new training
    other = tmp_path / "other.pt"
    other.write_bytes(path.read_bytes())
    quick = load_digits_classifier(other, QUICK)
    assert torch.load(other, weights_only=True)["key"] == QUICK.cache_key()
    assert not torch.equal(quick.head[1].weight, classifier.head[1].weight)


def test_training_is_deterministic():
    threads = torch.get_num_threads()
    first, second = train_digits_classifier(QUICK), train_digits_classifier(QUICK)
    other_seed = train_digits_classifier(dataclasses.replace(QUICK, seed=1))
    assert torch.get_num_threads() == threads  # restored after training on one thread
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name
    assert not torch.equal(first.head[1].weight, other_seed.head[1].weight)


def test_random_shift_translates_with_zero_fill():
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 1  # no zeros inside
    shifted = random_shift(x, 1, torch.Generator().manual_seed(1))
    seen = set()
    for image, result in zip(x, shifted):
        padded = F.pad(image, (1, 1, 1, 1))
        matches = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(padded[:, dy : dy + 8, dx : dx + 8], result)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 9  # all nine offsets occur


def test_digits_fid_is_small_for_real_digits_and_large_for_blurred_or_noise(classifier, test_split):
    reference = digits_reference_statistics(classifier)
    train = data_lib.digits("train").data.float() / 16
    blurred = F.avg_pool2d(F.pad(train, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = torch.rand(1500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    real, blur, uniform = (digits_metrics(x, classifier, reference, kid_subsets=10) for x in (train, blurred, noise))
    assert real["digits_fid"] < 15  # measured 8.7
    # all 1500 train digits in another order: the same statistics as the noise floor's
    assert real["digits_fid_train_floor"] == pytest.approx(real["digits_fid"], rel=1e-8)
    assert blur["digits_fid"] > 10 * real["digits_fid"] and uniform["digits_fid"] > 10 * real["digits_fid"]  # 187, 199
    assert blur["digits_kid"] > 10 * abs(real["digits_kid"]) and uniform["digits_kid"] > 10 * abs(real["digits_kid"])
    assert real["digits_inception_score"] > 2 * uniform["digits_inception_score"]  # confident, diverse predictions
    same = digits_metrics(test_split.data.float() / 16, classifier, reference, kid_subsets=2)
    assert abs(same["digits_fid"]) < 1e-8


def test_class_coverage_of_the_test_split(classifier, test_split):
    predicted = predictions(classifier, test_split)
    coverage = class_coverage(predicted)
    assert coverage["classes_covered"] == 10 and coverage["class_coverage"] == 1.0
    # the predicted and true class histograms differ by at most the error rate in total variation
    error_rate = float((predicted != test_split.labels).double().mean())
    hist = lambda labels: np.bincount(labels.numpy(), minlength=10) / len(labels)  # noqa: E731
    assert 0.5 * np.abs(hist(predicted) - hist(test_split.labels)).sum() <= error_rate + 1e-12
    assert coverage["class_kl_uniform"] < 0.01  # the test split is nearly balanced (27 to 33 per class)


def test_class_coverage_values():
    two = class_coverage(torch.tensor([3, 3, 7, 7]))
    assert two["classes_covered"] == 2 and two["class_coverage"] == 0.2
    assert two["class_entropy"] == pytest.approx(np.log(2)) and two["class_kl_uniform"] == pytest.approx(np.log(10) - np.log(2))
    balanced = class_coverage(np.arange(100) % 10)
    assert balanced["class_kl_uniform"] == pytest.approx(0.0, abs=1e-15)


def test_statistics_command_with_the_digits_extractor(classifier, tmp_path):
    out = tmp_path / "digits_test.npz"
    stats_main(["--config", str(CONFIGS / "vp" / "digits_ddpmpp_continuous.py"), "--extractor", "digits", "--split", "test", "--out", str(out)])
    written, expected = load_statistics(out), digits_reference_statistics(classifier)
    assert written.features.shape == (297, 128)
    np.testing.assert_allclose(written.mu, expected.mu, rtol=1e-12)
    np.testing.assert_allclose(written.sigma, expected.sigma, rtol=1e-10, atol=1e-12)
