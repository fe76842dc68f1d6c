"""Quantized data: the number of levels, and uniform dequantization (the continuous density whose likelihood bounds
the discrete one: Theis et al., 2016; Ho et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_n_bins(n_bins: int) -> int:
    """``n_bins``, the number of quantization levels, if it is an integer >= 2, else ``ValueError``."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    return n_bins


def uniform_dequantize(x: Tensor, n_bins: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Map data on the ``n_bins`` levels ``{0, 1/(n_bins-1), ..., 1}`` of ``[0, 1]`` to ``(x (n_bins - 1) + u) / n_bins``, ``u ~ U[0, 1)``."""
    check_n_bins(n_bins)
    levels = x.to(torch.float64) * (n_bins - 1)
    rounded = levels.round()
    if bool(((rounded - levels).abs() > 1e-3).any()) or bool(((rounded < 0) | (rounded > n_bins - 1)).any()):
        raise ValueError(f"x must lie on the {n_bins} levels k / {n_bins - 1} of [0, 1] (quantized data)")
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    return ((rounded + noise) / n_bins).to(x.dtype if x.is_floating_point() else torch.float32)
