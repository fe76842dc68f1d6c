"""Frechet distance between Gaussians fitted to features (FID, Heusel et al., 2017) and statistics files.

A statistics file is an ``.npz`` with ``mu`` ``(D,)`` and ``sigma`` ``(D, D)`` (float64), optionally the features
``(N, D)`` themselves (``features``; KID needs them). The 2021 reference's ``assets/stats/*_stats.npz`` hold the
Inception ``pool_3`` features instead of their moments; :func:`load_statistics` reads those too.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from base_lib.files import atomic_write

#: largest imaginary part (relative to the largest |diagonal entry|) tolerated on the diagonal of sqrtm(S1 S2):
#: the product of two PSD matrices has real non-negative eigenvalues, so more than this is a numerical failure
IMAGINARY_TOLERANCE = 1e-3


def _as_float64(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``mu`` ``(D,)`` and unbiased covariance ``sigma`` ``(D, D)`` (divisor ``N - 1``) of ``features`` ``(N, D)``,
    in float64."""
    features = _as_float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``, the squared 2-Wasserstein (Frechet) distance
    between ``N(mu1, S1)`` and ``N(mu2, S2)`` (Dowson & Landau, 1982; FID: Heusel et al., 2017, Eq. 6).

    ``(S1 S2)^(1/2)`` is ``scipy.linalg.sqrtm`` (its warning for a singular product, as for fewer samples than
    feature dimensions, is silenced: the result stays accurate to about 1e-8 of the traces); where it is not finite
    both covariances are offset by ``eps I`` first. Its imaginary part is rounding residue and is
    dropped, unless it exceeds :data:`IMAGINARY_TOLERANCE` on the diagonal (``ValueError``). Computed in float64;
    not clipped at 0 (identical statistics give 0 up to rounding, which may be slightly negative).
    """
    mu1, mu2, sigma1, sigma2 = (_as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"need mu (D,) and sigma (D, D) of one D, got {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    with warnings.catch_warnings():  # a singular product is expected (N <= D); its accuracy is handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = eps * np.eye(d)
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        residue = np.abs(np.diagonal(covmean).imag).max()
        if residue > IMAGINARY_TOLERANCE * max(np.abs(np.diagonal(covmean)).max(), 1.0):
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary diagonal component {residue:.3g}: the covariances are not PSD")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """Feature moments of a data set, and optionally the features themselves."""

    mu: np.ndarray  # mean (D,), float64
    sigma: np.ndarray  # covariance (D, D), float64, divisor N - 1
    features: np.ndarray | None = None  # the features (N, D) (KID needs them), or None

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor, keep_features: bool = True) -> "FeatureStatistics":
        features = _as_float64(features)
        mu, sigma = feature_statistics(features)
        return cls(mu, sigma, features if keep_features else None)

    def frechet_distance(self, other: "FeatureStatistics") -> float:
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)


def save_statistics(path: str | os.PathLike, statistics: FeatureStatistics) -> Path:
    """Write ``statistics`` to the ``.npz`` ``path`` (keys ``mu``, ``sigma`` and, if kept, ``features``) atomically."""
    arrays = {"mu": statistics.mu, "sigma": statistics.sigma}
    if statistics.features is not None:
        arrays["features"] = statistics.features
    return atomic_write(path, lambda file: np.savez_compressed(file, **arrays))


def load_statistics(path: str | os.PathLike) -> FeatureStatistics:
    """Read a statistics ``.npz``: ``mu`` and ``sigma`` (with ``features`` if present), or the reference's files that
    hold only the features ``pool_3`` (their moments are computed). ``FileNotFoundError`` names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no statistics file {path}: compute it with `python -m sample_quality.stats --config ... --out {path}`")
    with np.load(path) as file:
        keys = set(file.files)
        features = next((file[k].astype(np.float64) for k in ("features", "pool_3") if k in keys), None)
        if {"mu", "sigma"} <= keys:
            return FeatureStatistics(file["mu"].astype(np.float64), file["sigma"].astype(np.float64), features)
    if features is None:
        raise ValueError(f"{path} holds neither mu and sigma nor features (pool_3); keys: {sorted(keys)}")
    return FeatureStatistics.from_features(features)
