"""From images to feature metrics: any feature extractor, dataset statistics, and FID / KID / IS of a sample set.

A feature extractor is a callable ``feature_fn(images) -> features`` taking 8-bit images, uint8 ``(B, C, H, W)``
with values ``0..255``, and returning float features ``(B, D)``, or a pair ``(features (B, D), logits (B, K))``
when it is also a classifier (the Inception network, :mod:`sample_quality.inception`; the digits classifier,
:mod:`sample_quality.digits`); the logits give the Inception score. Tests inject small extractors.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .frechet import FeatureStatistics, feature_statistics, frechet_distance
from .inception_score import inception_score
from .kernel_distance import kernel_inception_distance

FeatureFn = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor]"]

DEFAULT_BATCH_SIZE = 250  # images per feature-extractor call
KID_SUBSETS = 100  # torch-fidelity's defaults for KID and IS
KID_SUBSET_SIZE = 1000
INCEPTION_SPLITS = 10


def float_images_to_uint8(images: Tensor) -> Tensor:
    """Images with values in ``[0, 1]`` as 8-bit ``floor(255 x + 0.5)``, clipped, NaN as 0 (the rounding of saved
    samples); uint8 input is returned as it is."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 levels 0..255 or floats in [0, 1], got {images.dtype}")
    return (torch.nan_to_num(images.detach().float(), nan=0.0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


def levels_to_uint8(levels: Tensor, num_levels: int) -> Tensor:
    """Quantized images of ``L = num_levels`` levels ``k`` (value ``k / (L - 1)``) as 8-bit ``floor(255 k / (L - 1) + 1/2)``,
    the rounding :func:`float_images_to_uint8` gives the values ``k / (L - 1)``."""
    if num_levels == 256:
        return levels
    return torch.floor(levels.to(torch.float64) * (255.0 / (num_levels - 1)) + 0.5).to(torch.uint8)


def image_batches(images: Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Tensor]:
    """``images`` (uint8, or floats in ``[0, 1]``) as 8-bit batches of at most ``batch_size``."""
    for start in range(0, images.shape[0], batch_size):
        yield float_images_to_uint8(images[start : start + batch_size])


def dataset_batches(dataset: Any, batch_size: int = DEFAULT_BATCH_SIZE, max_examples: int | None = None) -> Iterator[Tensor]:
    """The first ``max_examples`` (default: all) images of a quantized ``data_lib`` dataset, in order, as 8-bit batches."""
    if dataset.num_levels is None or len(dataset.shape) != 3:
        raise ValueError(f"feature statistics need a quantized image dataset, got {dataset!r}")
    count = len(dataset) if max_examples is None else min(int(max_examples), len(dataset))
    for start in range(0, count, batch_size):
        yield levels_to_uint8(dataset.gather(torch.arange(start, min(start + batch_size, count))), dataset.num_levels)


def extract_features(feature_fn: FeatureFn, batches: Iterable[Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    """``feature_fn`` on every batch, without gradients; the features ``(N, D)`` and the logits ``(N, K)`` (``None``
    if the extractor gives none), float64 numpy arrays."""
    features, logits = [], []
    with torch.no_grad():
        for batch in batches:
            out = feature_fn(batch)
            pair = out if isinstance(out, tuple) else (out, None)
            features.append(pair[0].detach().to("cpu", torch.float64))
            if pair[1] is not None:
                logits.append(pair[1].detach().to("cpu", torch.float64))
    if not features:
        raise ValueError("no images to extract features from")
    return torch.cat(features).numpy(), torch.cat(logits).numpy() if logits else None


def compute_dataset_statistics(
    dataset: Any,
    feature_fn: FeatureFn,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
    keep_features: bool = True,
) -> FeatureStatistics:
    """Feature mean and covariance (and, with ``keep_features``, the features, for KID) of the first ``max_examples``
    images of ``dataset`` (a quantized ``data_lib`` dataset; default: all of it)."""
    features, _ = extract_features(feature_fn, dataset_batches(dataset, batch_size, max_examples))
    return FeatureStatistics.from_features(features, keep_features)


def metrics_from_features(
    features: np.ndarray,
    logits: np.ndarray | None,
    reference: FeatureStatistics,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    inception_splits: int = INCEPTION_SPLITS,
    seed: int = 0,
) -> dict[str, float]:
    """``fid`` of the sample features against ``reference``; ``kid`` and ``kid_std`` where the reference kept its
    features (subsets of ``min(kid_subset_size, N_samples, N_reference)``, reported as ``kid_subset_size``);
    ``inception_score`` and ``inception_score_std`` where there are logits (at most ``N / 2`` splits, so that each
    split holds two samples)."""
    mu, sigma = feature_statistics(features)
    results = {"fid": frechet_distance(mu, sigma, reference.mu, reference.sigma), "num_samples": float(len(features))}
    if reference.features is not None:
        size = min(kid_subset_size, len(features), len(reference.features))
        results["kid"], results["kid_std"] = kernel_inception_distance(features, reference.features, kid_subsets, size, seed=seed)
        results["kid_subset_size"] = float(size)
    if logits is not None:
        splits = max(1, min(inception_splits, len(logits) // 2))
        results["inception_score"], results["inception_score_std"] = inception_score(logits, splits)
    return results


def feature_metrics(
    samples: Tensor,
    feature_fn: FeatureFn,
    reference: FeatureStatistics,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **options: Any,
) -> dict[str, float]:
    """FID / KID / IS (:func:`metrics_from_features`, ``options`` are its keyword arguments) of ``samples``
    ``(N, C, H, W)`` (uint8, or floats in ``[0, 1]`` rounded to 8 bits) under ``feature_fn``, against ``reference``."""
    if samples.ndim != 4 or samples.shape[0] < 2:
        raise ValueError(f"samples must be images (N, C, H, W) with N >= 2, got shape {tuple(samples.shape)}")
    features, logits = extract_features(feature_fn, image_batches(samples, batch_size))
    if features.shape[1] != reference.mu.shape[0]:
        raise ValueError(f"the feature extractor gives {features.shape[1]} features, the reference statistics {reference.mu.shape[0]}")
    return metrics_from_features(features, logits, reference, **options)
