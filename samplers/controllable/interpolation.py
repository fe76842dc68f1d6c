"""Interpolation in the latent space of the probability-flow ODE ([SDE] section 4.3).

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021).

:func:`ode_interpolate` encodes two batches with the probability-flow ODE, interpolates their latents with
:func:`interpolate_latents` (spherically, for Gaussian latents) and decodes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from sde_lib import SDE, ScoreFn

from ..common import check_choice
from ..ode import DEFAULT_METHOD, ode_encode, ode_sample
from .known_values import check_data, describe

INTERPOLATIONS = ("slerp", "linear")


def _check_alphas(alphas: float | Sequence[float] | Tensor, like: Tensor) -> Tensor:
    values = torch.as_tensor(alphas, dtype=like.dtype, device=like.device)
    if values.ndim > 1 or values.numel() == 0 or not torch.isfinite(values).all():
        raise ValueError(f"alphas must be a finite number or a non-empty 1-D sequence of numbers, got {alphas!r}")
    return values.reshape(-1)


def interpolate_latents(
    z0: Tensor, z1: Tensor, alphas: float | Sequence[float] | Tensor, method: str = "slerp"
) -> Tensor:
    """Interpolate latents ``z0``, ``z1`` (each ``(B, ...)``) at ``alphas`` (``(A,)``): returns ``(A, B, ...)``.

    ``"slerp"`` (Shoemake, 1985; the choice for Gaussian latents, whose norm concentrates at ``sqrt(D)`` times
    the prior std): ``sin((1 - a) theta) / sin(theta) z0 + sin(a theta) / sin(theta) z1`` with ``theta`` the angle
    between the flattened latents of each pair, which keeps the norm of orthogonal equal-norm latents and returns
    the endpoints exactly at ``a = 0, 1``; pairs at an angle below ``1e-4`` rad fall back to linear. ``"linear"``:
    ``(1 - a) z0 + a z1`` (its midpoint of independent Gaussian latents has ``1 / sqrt(2)`` of their norm, a point
    the decoder rarely sees).
    """
    check_choice("method", method, INTERPOLATIONS)
    if not isinstance(z0, Tensor) or not isinstance(z1, Tensor) or not z0.is_floating_point() or z0.ndim < 1:
        raise ValueError(f"z0 and z1 must be floating-point tensors of shape (B, ...), got {describe(z0)} and {describe(z1)}")
    if z1.shape != z0.shape:
        raise ValueError(f"z1 must have the shape of z0 {tuple(z0.shape)}, got {tuple(z1.shape)}")
    a = _check_alphas(alphas, z0).reshape(-1, *([1] * z0.ndim))  # (A, 1, ..., 1)
    linear = (1 - a) * z0 + a * z1
    if method == "linear":
        return linear
    flat0, flat1 = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = torch.acos(cos.clamp(-1.0, 1.0)).reshape(-1, *([1] * (z0.ndim - 1)))  # (B, 1, ..., 1)
    sin = torch.sin(theta)
    degenerate = theta < 1e-4
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    slerp = (torch.sin((1 - a) * theta) * z0 + torch.sin(a * theta) * z1) / safe_sin
    return torch.where(degenerate, linear, slerp)


def ode_interpolate(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    x1: Tensor,
    alphas: float | Sequence[float] | Tensor,
    interpolation: str = "slerp",
    method: str = DEFAULT_METHOD,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Encode ``x0``, ``x1`` (each ``(B, ...)``) with :func:`samplers.ode.ode_encode`, interpolate the latents with
    :func:`interpolate_latents` (``interpolation``) at ``alphas`` (``(A,)``), decode with :func:`samplers.ode.ode_sample`.

    ``method``, ``rtol``, ``atol``, ``eps``: the ODE options of both. Returns ``(x, nfe)`` with ``x`` of shape
    ``(A, B, ...)`` and ``nfe`` the evaluations of the encoding and the decoding together.
    """
    check_data(x0, "x0")
    if not isinstance(x1, Tensor) or x1.shape != x0.shape:
        raise ValueError(f"x1 must be a tensor of the shape of x0 {tuple(x0.shape)}, got {describe(x1)}")
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    _check_alphas(alphas, x0)
    z, nfe_encode = ode_encode(sde, score_fn, torch.cat([x0, x1.to(x0)]), method=method, rtol=rtol, atol=atol, eps=eps,
                               progress=progress)
    latents = interpolate_latents(z[: x0.shape[0]], z[x0.shape[0]:], alphas, interpolation)
    x, nfe_decode = ode_sample(sde, score_fn, latents.flatten(0, 1).shape, method=method, rtol=rtol, atol=atol, eps=eps,
                               z=latents.flatten(0, 1), progress=progress)
    return x.reshape(latents.shape), nfe_encode + nfe_decode
