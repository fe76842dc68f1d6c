"""Normalisation layers of the RefineNet score networks NCSN (Song & Ermon, 2019) and NCSNv2 (Song & Ermon, 2020).

Every layer here is called as ``norm(x, labels)``: the conditional layer picks its affine parameters from a
table row per noise level ``labels`` (int64 indices), the unconditional ones ignore ``labels``. That one
signature lets a residual or RefineNet block be built once for both networks.

* :class:`InstanceNorm2dPlus` / :class:`ConditionalInstanceNorm2dPlus`: InstanceNorm++ (NCSN, appendix A.1,
  eq. (A.1)): instance normalisation that puts back the spread of the channel means,
  ``z_k = gamma_k (x_k - mu_k) / s_k + gamma_k alpha_k (mu_k - m) / sqrt(v + eps) + beta_k``, with ``mu_k``,
  ``s_k`` the spatial mean and standard deviation of channel ``k`` and ``m``, ``v`` the mean and (unbiased)
  variance of the ``mu_k`` over channels.
* :class:`InstanceNorm2d`: plain instance normalisation without affine parameters.
* :class:`VarianceNorm2d`: ``alpha_k x_k / sqrt(var_k + eps)`` (spatial unbiased variance, no centring).

:func:`get_normalization` maps ``config.model.normalization`` to a factory ``num_features -> layer`` as the
2021 reference's ``get_normalization`` does for the names it can build; its ``'GroupNorm'`` choice cannot be
constructed there (``nn.GroupNorm(num_features)`` lacks an argument) and is rejected here.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.checks import check_positive_int

EPS = 1e-5  # the reference's epsilon in every variance of this module
NORMALIZATIONS = ("InstanceNorm++", "InstanceNorm", "VarianceNorm")  # config.model.normalization choices
CONDITIONAL_NORMALIZATIONS = ("InstanceNorm++",)  # those with a per-noise-level (conditional) form

NormFactory = Callable[[int], nn.Module]
"""``factory(num_features) -> layer`` called as ``layer(x, labels)``."""


def _check_num_features(num_features: int) -> int:
    num_features = check_positive_int("num_features", num_features)
    if num_features < 2:
        raise ValueError(
            f"num_features must be >= 2 for InstanceNorm++ (the variance of the channel means needs two channels), "
            f"got {num_features}"
        )
    return num_features


def instance_norm_plus(x: Tensor, gamma: Tensor, alpha: Tensor, beta: Tensor, eps: float = EPS) -> Tensor:
    """InstanceNorm++ of ``x`` (B, C, H, W) with affine parameters of shape (C,) or (B, C) (NCSN eq. (A.1)).

    ``gamma (x - mu) / sqrt(s^2 + eps) + gamma alpha (mu - m) / sqrt(v + eps) + beta`` with per-channel spatial
    mean ``mu`` and biased variance ``s^2``, and ``m``, ``v`` the mean and unbiased variance of ``mu`` across
    channels. Computed as one multiply-add on ``x - mu``, from one pass of statistics.
    """
    var, mu = torch.var_mean(x, dim=(2, 3), correction=0)  # (B, C)
    mean_var, mean_mean = torch.var_mean(mu, dim=1, keepdim=True)  # (B, 1), unbiased across channels
    standardized_means = (mu - mean_mean) * torch.rsqrt(mean_var + eps)
    scale = gamma * torch.rsqrt(var + eps)
    shift = gamma * alpha * standardized_means + beta
    return torch.addcmul(shift[..., None, None], x - mu[..., None, None], scale[..., None, None])


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ with learned per-channel ``alpha``, ``gamma`` (init N(1, 0.02^2)) and ``beta`` (init 0)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = _check_num_features(num_features)  # channels C of the input
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))  # weight of the channel-mean term
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))  # output scale
        self.beta = nn.Parameter(torch.zeros(num_features))  # output shift

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return instance_norm_plus(x, self.gamma, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class ConditionalInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose ``gamma``, ``alpha``, ``beta`` are row ``labels`` of one table (NCSN's CondInstanceNorm++).

    ``embed.weight`` has shape ``(num_classes, 3 C)`` with columns ``[gamma | alpha | beta]``, as in the
    reference; ``gamma`` and ``alpha`` start at N(1, 0.02^2), ``beta`` at 0.
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_features = _check_num_features(num_features)  # channels C of the input
        self.num_classes = check_positive_int("num_classes", num_classes)  # rows: one per noise level
        self.embed = nn.Embedding(num_classes, 3 * num_features)  # per-level [gamma | alpha | beta]
        with torch.no_grad():
            self.embed.weight[:, : 2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features:].zero_()

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        gamma, alpha, beta = self.embed(labels).chunk(3, dim=-1)
        return instance_norm_plus(x, gamma, alpha, beta)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_classes={self.num_classes}"


class InstanceNorm2d(nn.Module):
    """``(x - mu) / sqrt(s^2 + eps)`` per sample and channel; no parameters (``nn.InstanceNorm2d(C)`` defaults)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)  # channels C of the input

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return F.instance_norm(x, eps=EPS)

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class VarianceNorm2d(nn.Module):
    """``alpha x / sqrt(var + eps)`` with ``var`` the unbiased spatial variance per sample and channel.

    ``alpha`` starts at N(1, 0.02^2).
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)  # channels C of the input
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))  # output scale

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        var = torch.var(x, dim=(2, 3), keepdim=True)
        return x * torch.rsqrt(var + EPS) * self.alpha[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}"


_UNCONDITIONAL: dict[str, type[nn.Module]] = {
    "InstanceNorm++": InstanceNorm2dPlus,
    "InstanceNorm": InstanceNorm2d,
    "VarianceNorm": VarianceNorm2d,
}


def get_normalization(name: str, num_classes: int | None = None) -> NormFactory:
    """Factory ``num_features -> layer`` for ``config.model.normalization = name``.

    With ``num_classes`` the layer is conditional on the noise level (one parameter row per class; only
    ``'InstanceNorm++'`` has such a form), without it unconditional.
    """
    if num_classes is not None:
        if name not in CONDITIONAL_NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {CONDITIONAL_NORMALIZATIONS} for a noise-conditional network, "
                f"got {name!r}"
            )
        num_classes = check_positive_int("num_classes", num_classes)
        return lambda num_features: ConditionalInstanceNorm2dPlus(num_features, num_classes)
    if name not in _UNCONDITIONAL:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {name!r}")
    return _UNCONDITIONAL[name]
