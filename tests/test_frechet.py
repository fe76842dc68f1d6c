"""Frechet distance (FID formula), feature statistics and their files, and the FID / KID / IS pipeline with a small
injected feature extractor (offline). Oracles: scipy's sqrtm used directly, the symmetric form
``tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2)`` through eigendecompositions, and the closed form for
commuting (diagonal) covariances."""

import numpy as np
import pytest
import scipy.linalg
import torch

import data_lib
from sample_quality import (
    FeatureStatistics,
    compute_dataset_statistics,
    feature_metrics,
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_statistics,
    save_statistics,
)
from sample_quality.features import float_images_to_uint8, levels_to_uint8


def random_features(n, d, seed, shift=0.0):
    """Correlated Gaussian features: a random linear map of standard normals, plus ``shift``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift


def direct_scipy_fid(mu1, s1, mu2, s2):
    """The FID formula written out with scipy.linalg.sqrtm of S1 S2."""
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real


def symmetric_form_fid(mu1, s1, mu2, s2):
    """The same distance through symmetric PSD matrices only (eigh / eigvalsh): an independent computation."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    x = torch.from_numpy(random_features(300, 6, seed=0)).float()
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma, torch.cov(x.double().T).numpy(), rtol=1e-12, atol=1e-15)  # divisor N - 1


@pytest.mark.parametrize("n1, n2, d", [(500, 400, 16), (300, 300, 64)])
def test_fid_equals_direct_scipy_and_symmetric_form(n1, n2, d):
    s1 = feature_statistics(random_features(n1, d, seed=1))
    s2 = feature_statistics(random_features(n2, d, seed=2, shift=0.3))
    fid = frechet_distance(*s1, *s2)
    assert fid > 1.0  # different distributions
    assert fid == pytest.approx(direct_scipy_fid(*s1, *s2), rel=1e-10)
    assert fid == pytest.approx(symmetric_form_fid(*s1, *s2), rel=1e-8)


@pytest.mark.parametrize("n, d", [(500, 16), (20, 64)])  # full rank; rank 19 < 64 (singular product)
def test_fid_of_identical_statistics_is_zero_up_to_rounding(n, d):
    mu, sigma = feature_statistics(random_features(n, d, seed=3))
    scale = np.trace(sigma)
    # sqrtm of a singular matrix loses about half the digits: ~1e-8 relative (measured 1.5e-8 at n=20, d=64)
    tolerance = 1e-12 if n > d else 1e-6
    assert abs(frechet_distance(mu, sigma, mu, sigma)) <= tolerance * scale


def test_fid_of_singular_covariances_agrees_with_the_symmetric_form():
    s1 = feature_statistics(random_features(30, 64, seed=4))
    s2 = feature_statistics(random_features(40, 64, seed=5, shift=0.5))
    assert frechet_distance(*s1, *s2) == pytest.approx(symmetric_form_fid(*s1, *s2), rel=1e-6)


def test_fid_of_diagonal_gaussians_has_its_closed_form():
    """Commuting covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 exactly."""
    rng = np.random.default_rng(6)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    a, b = rng.uniform(0.1, 3.0, size=10), rng.uniform(0.1, 3.0, size=10)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-12)


def test_fid_rejects_non_psd_covariances_and_bad_shapes():
    with pytest.raises(ValueError, match="imaginary"):  # sqrtm(diag(1, -1)) = diag(1, i)
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mu"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_statistics_files_round_trip_and_read_the_reference_format(tmp_path):
    features = random_features(50, 4, seed=7)
    stats = FeatureStatistics.from_features(features)
    path = save_statistics(tmp_path / "stats" / "s.npz", stats)
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.npz"]  # no temporary left behind
    with np.load(path) as file:
        assert set(file.files) == {"mu", "sigma", "features"}
    loaded = load_statistics(path)
    for name in ("mu", "sigma", "features"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    # mu and sigma only
    save_statistics(tmp_path / "m.npz", FeatureStatistics(stats.mu, stats.sigma))
    assert load_statistics(tmp_path / "m.npz").features is None
    # the 2021 reference's files: the pool_3 features only (float32)
    np.savez(tmp_path / "ref.npz", pool_3=features.astype(np.float32))
    reference = load_statistics(tmp_path / "ref.npz")
    np.testing.assert_allclose(reference.sigma, np.cov(features.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(FileNotFoundError, match="sample_quality.stats"):
        load_statistics(tmp_path / "missing.npz")


class ProjectionExtractor:
    """A small injected feature extractor: a fixed random projection of the pixels (as 8-bit / 255) through tanh
    gives 8 features and 5 logits. Records the batches it sees."""

    def __init__(self, pixels, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.weights = torch.randn(pixels, 13, generator=g, dtype=torch.float64) / pixels**0.5
        self.batches = []

    def __call__(self, images):
        assert images.dtype == torch.uint8
        self.batches.append(images.shape[0])
        out = torch.tanh(3 * (images.flatten(1).double() / 255.0 - 0.25) @ self.weights)
        return out[:, :8], out[:, 8:]


def test_levels_and_float_images_round_to_the_same_8_bits():
    levels = torch.arange(17, dtype=torch.uint8).view(1, 1, 1, 17)
    eight_bit = levels_to_uint8(levels, 17)
    assert torch.equal(eight_bit, float_images_to_uint8(levels.float() / 16))
    assert eight_bit.flatten().tolist() == [int(np.floor(255 * k / 16 + 0.5)) for k in range(17)]
    assert torch.equal(levels_to_uint8(levels, 256), levels)


def test_pipeline_writes_statistics_and_scores_samples_against_them(tmp_path):
    """Dataset statistics with an injected extractor, written and read back; then FID, KID and IS of a sample set
    against the file equal the formulas applied to the extractor's outputs by hand."""
    extractor = ProjectionExtractor(64)
    test = data_lib.digits("test")
    stats = compute_dataset_statistics(test, extractor, batch_size=100)
    assert extractor.batches == [100, 100, 97]
    reference = load_statistics(save_statistics(tmp_path / "digits_test.npz", stats))

    samples = data_lib.digits("train").data[:400].float() / 16  # floats in [0, 1] as saved samples are
    metrics = feature_metrics(samples, extractor, reference, batch_size=128, kid_subsets=5, kid_subset_size=200, inception_splits=4)

    features, logits = extractor(levels_to_uint8(data_lib.digits("train").data[:400], 17))
    ref_features, _ = extractor(levels_to_uint8(test.data, 17))
    mu, sigma = features.mean(0).numpy(), np.cov(features.numpy(), rowvar=False)
    assert metrics["fid"] == pytest.approx(direct_scipy_fid(mu, sigma, ref_features.mean(0).numpy(), np.cov(ref_features.numpy(), rowvar=False)), rel=1e-9)
    assert (metrics["kid"], metrics["kid_std"]) == pytest.approx(kernel_inception_distance(features, ref_features, 5, 200), rel=1e-12)
    assert (metrics["inception_score"], metrics["inception_score_std"]) == pytest.approx(inception_score(logits, 4), rel=1e-12)
    assert metrics["num_samples"] == 400 and metrics["kid_subset_size"] == 200

    # the reference set scored against itself: FID 0 up to rounding; a noise set: far away
    same = feature_metrics(test.data.float() / 16, extractor, reference, kid_subsets=2)
    noise = feature_metrics(torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(0)), extractor, reference, kid_subsets=2)
    assert abs(same["fid"]) < 1e-9 and same["kid_subset_size"] == len(test)  # KID subsets capped at the set sizes
    assert noise["fid"] > 20 * metrics["fid"]


def test_pipeline_checks_its_inputs():
    extractor = ProjectionExtractor(64)
    reference = FeatureStatistics(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="features"):
        feature_metrics(torch.rand(10, 1, 8, 8), extractor, reference)
    with pytest.raises(ValueError, match="images"):
        feature_metrics(torch.rand(10, 64), extractor, reference)
    with pytest.raises(ValueError, match="quantized image dataset"):
        compute_dataset_statistics(data_lib.InMemoryDataset("moons", "test", torch.zeros(4, 2), None), extractor)
