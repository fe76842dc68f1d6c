"""Metrics of samples of the 2-D toy densities (:mod:`data_lib.toy`): sliced Wasserstein distance to fresh data and
the exact mean log-density."""

from __future__ import annotations

import math

import torch
from torch import Tensor

import data_lib

from .sliced_wasserstein import sliced_wasserstein

SW_PROJECTIONS = 256  # projections of the sliced Wasserstein distance


def mean_log_density(samples: Tensor, dataset_name: str) -> dict[str, float]:
    """``E log p_data(x)`` over ``samples`` ``(N, 2)`` under the exact toy density (empty where it has no closed form):
    ``sample_log_density``, the mean over the samples of non-zero density, and ``sample_zero_density_fraction``,
    the fraction of zero density (outside the checkerboard's squares). On data samples the mean estimates the
    negative entropy ``-H(p_data)`` with standard error ``sd(log p(x)) / sqrt(N)``."""
    log_prob = data_lib.toy_log_prob(dataset_name)
    if log_prob is None:
        return {}
    values = log_prob(samples.to(torch.float64))
    finite = torch.isfinite(values)
    return {
        "sample_log_density": float(values[finite].mean()) if bool(finite.any()) else math.nan,
        "sample_zero_density_fraction": float((~finite).double().mean()),
    }


def toy_metrics(samples: Tensor, dataset_name: str, generator: torch.Generator, num_projections: int = SW_PROJECTIONS) -> dict[str, float]:
    """Metrics of ``samples`` ``(N, 2)`` of the toy density ``dataset_name``, with two fresh data sets of ``N`` points
    drawn from ``generator``:

    * ``sliced_wasserstein``: ``SW_2`` (:func:`sliced_wasserstein`) from the samples to the first data set, and
      ``sliced_wasserstein_data_to_data`` from the second to the first on the same projections: the value a perfect
      sampler has at this ``N`` (the noise floor);
    * where the density has a closed form, :func:`mean_log_density` of the samples and ``data_log_density``, that of
      the second data set (the ideal value, ``-H(p_data)`` up to its standard error).
    """
    n = samples.shape[0]
    data, other = (data_lib.sample_toy(dataset_name, n, generator, dtype=torch.float64) for _ in range(2))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    projections = lambda: torch.Generator().manual_seed(seed)  # noqa: E731  the same directions for both distances
    results = {
        "sliced_wasserstein": float(sliced_wasserstein(samples, data, num_projections, generator=projections())),
        "sliced_wasserstein_data_to_data": float(sliced_wasserstein(other, data, num_projections, generator=projections())),
    }
    log_density = mean_log_density(samples, dataset_name)
    if log_density:
        results.update(log_density, data_log_density=mean_log_density(other, dataset_name)["sample_log_density"])
    return results
