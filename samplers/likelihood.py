"""Exact log-likelihoods and bits/dim from the probability-flow ODE.

The probability-flow ODE ``dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` [SDE, eq. (13)] is a
continuous normalizing flow, so by the instantaneous change of variables [SDE, eq. (39)]

    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div_x f~(x(t), t) dt.

:func:`log_likelihood` integrates the augmented state ``(x, int div f~)`` from ``eps`` to ``T`` in one batched
solve. The divergence is exact (the Jacobian trace, one vector-Jacobian product per dimension) or the
Hutchinson--Skilling estimate ``v^T (d f~ / d x) v`` with one probe ``v`` per sample held fixed along the
whole trajectory [SDE, eq. (40)], which keeps the ODE deterministic so adaptive solvers work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from data_lib.dequantize import check_n_bins, uniform_dequantize
from sde_lib import SDE, ScoreFn

from .common import CountingScoreFn, check_choice, check_eps, check_positive, check_positive_int
from .ode import probability_flow_drift
from .odeint import ODE_METHODS, odeint

DIVERGENCES = ("rademacher", "gaussian", "exact")
InverseScaler = Callable[[Tensor], Tensor]


def hutchinson_probe(x: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """One probe per sample for the Hutchinson estimator: Rademacher (+-1) or standard Gaussian entries, shaped like ``x``."""
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


#: rows of the Jacobian computed per batched backward pass by the exact divergence
EXACT_DIVERGENCE_CHUNK = 64


def _drift_and_divergence(drift_fn: Callable[[Tensor, Tensor], Tensor], t: Tensor, x: Tensor, probe: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(f~(x, t), div f~(x, t))``: the Hutchinson estimate ``v^T J v`` for a probe ``v``, else the exact trace of ``J``.

    The exact trace takes the Jacobian's rows ``e_i^T J`` by batched vector-Jacobian products
    (``EXACT_DIVERGENCE_CHUNK`` rows per backward pass) and sums their diagonal entries.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = drift_fn(t, x)
        if probe is not None:
            (vjp,) = torch.autograd.grad(drift, x, grad_outputs=probe)
            return drift.detach(), (vjp * probe).flatten(1).sum(1)
        dim = x[0].numel()
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for start in range(0, dim, EXACT_DIVERGENCE_CHUNK):
            rows = torch.arange(start, min(start + EXACT_DIVERGENCE_CHUNK, dim), device=x.device)
            basis = torch.zeros(len(rows), *x.shape, dtype=x.dtype, device=x.device)  # (R, B, *E)
            basis.flatten(2)[torch.arange(len(rows)), :, rows] = 1.0
            (jac_rows,) = torch.autograd.grad(drift, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True)
            div = div + jac_rows.flatten(2)[torch.arange(len(rows)), :, rows].sum(0)
    return drift.detach(), div


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, int]:
    """Log-likelihood of ``x`` (taken as a sample at time ``eps``) under the probability-flow ODE of ``sde`` and ``score_fn``.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)``; must be differentiable in ``x`` (the divergence uses autograd).
        x: data ``(B, ...)`` in the model's space.
        divergence: ``"rademacher"`` or ``"gaussian"`` (Hutchinson--Skilling, one probe per sample fixed along
            the trajectory) or ``"exact"`` (Jacobian trace: one backward pass per dimension, for low-dimensional data).
        rtol, atol: tolerances of the adaptive solver.
        eps: start time in ``(0, T)``; the density computed is ``p_eps``.
        method: a torch-native solver (``"dopri5"``, ``"bosh3"``: on the data's device, per-sample steps) or a
            scipy one (``"RK45"``, ... as in the 2021 reference).
        generator: draws the Hutchinson probes.

    Returns:
        ``(logp, z, nfe)``: ``logp`` ``(B,)`` in nats per sample, ``z = x(T)`` the latent, ``nfe`` the number of
        (batched) score evaluations.
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("method", method, ODE_METHODS)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    eps = check_eps(eps, sde)
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (B, ...) with at least one data dimension")
    counter = CountingScoreFn(score_fn)
    drift_fn = probability_flow_drift(sde, counter)
    exact = divergence == "exact"
    probe = None if exact else hutchinson_probe(x, divergence, generator)

    def augmented(t: Tensor, state: tuple[Tensor, Tensor], *args: Tensor) -> tuple[Tensor, Tensor]:
        return _drift_and_divergence(drift_fn, t, state[0], args[0] if args else None)

    state0 = (x.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    solution = odeint(
        augmented, state0, eps, sde.T, method=method, rtol=rtol, atol=atol,
        args=() if exact else (probe,), progress=progress, desc="log-likelihood",
    )
    z, delta_logp = solution.y
    return sde.prior_logp(z) + delta_logp, z, counter.nfe


def _affine_slope(inverse_scaler: InverseScaler | None, like: Tensor) -> float:
    """Slope ``a`` of an affine ``inverse_scaler(y) = a y + b``; ``ValueError`` if it is not affine."""
    if inverse_scaler is None:
        return 1.0
    probe = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=like.device)
    u = inverse_scaler(probe).to(torch.float64)
    slope = float(u[2] - u[0])
    if not math.isfinite(slope) or slope == 0 or abs(float(u[1] - 0.5 * (u[0] + u[2]))) > 1e-6 * max(1.0, abs(slope)):
        raise ValueError("inverse_scaler must be an affine map y -> a y + b with a != 0 (e.g. (y + 1) / 2)")
    return slope


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    n_bins: int = 256,
    inverse_scaler: InverseScaler | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor, int]:
    """Bits per dimension of dequantized data ``x`` (in the model's space), the bound used in [SDE] Table 2.

    For data quantized to ``n_bins`` levels of ``[0, 1]`` and dequantized uniformly, with ``u = inverse_scaler(y)
    = a y + b`` mapping the model's space back to ``[0, 1]``, the discrete log-probability obeys
    ``log P(k) >= E[log p_u(u)] - D log(n_bins)`` with ``log p_u(u) = log p_y(y) - D log|a|``, hence

        bpd = -log p_y(y) / (D ln 2) + log2(n_bins) + log2|a|.

    (For 8-bit data this gives the reference's offsets: 8 for ``[0, 1]`` data, 7 for ``[-1, 1]``.) ``kwargs`` go
    to :func:`log_likelihood`. Returns ``(bpd (B,), z, nfe)``.
    """
    check_n_bins(n_bins)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape (B, ...) with at least one data dimension")
    slope = _affine_slope(inverse_scaler, x)
    u = inverse_scaler(x) if inverse_scaler is not None else x
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError(
            f"x must be dequantized data whose inverse_scaler image lies in [0, 1]; got values in "
            f"[{u.min().item():.4g}, {u.max().item():.4g}]"
        )
    logp, z, nfe = log_likelihood(sde, score_fn, x, **kwargs)
    dim = x[0].numel()
    bpd = -logp / (dim * math.log(2.0)) + math.log2(n_bins) + math.log2(abs(slope))
    return bpd, z, nfe


@dataclass
class BitsPerDim:
    """Bits/dim of a batch averaged over several dequantizations and probes."""

    per_sample: Tensor  # (B,) mean over repeats for each sample
    mean: float  # mean over samples and repeats
    stderr: float  # standard error of ``mean`` (over the B * num_repeats values)
    nfe: int  # total score evaluations


def dequantized_bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    n_bins: int = 256,
    scaler: Callable[[Tensor], Tensor] | None = None,
    inverse_scaler: InverseScaler | None = None,
    num_repeats: int = 1,
    generator: torch.Generator | None = None,
    **kwargs,
) -> BitsPerDim:
    """Bits/dim of quantized data ``x`` (levels of ``[0, 1]``), averaged over ``num_repeats`` uniform dequantizations
    and Hutchinson probes, as the reference's ``bpd_num_repeats``. ``scaler`` maps ``[0, 1]`` to the model's space and
    ``inverse_scaler`` back. Returns a :class:`BitsPerDim` with the standard error of the mean.
    """
    check_positive_int("num_repeats", num_repeats)
    values, nfe = [], 0
    for _ in range(num_repeats):
        u = uniform_dequantize(x, n_bins, generator)
        y = scaler(u) if scaler is not None else u
        bpd, _, n = bits_per_dim(sde, score_fn, y, n_bins=n_bins, inverse_scaler=inverse_scaler, generator=generator, **kwargs)
        values.append(bpd)
        nfe += n
    stacked = torch.stack(values)  # (repeats, B)
    flat = stacked.flatten().to(torch.float64)
    stderr = float(flat.std(unbiased=True) / math.sqrt(flat.numel())) if flat.numel() > 1 else float("nan")
    return BitsPerDim(per_sample=stacked.mean(0), mean=float(flat.mean()), stderr=stderr, nfe=nfe)
