"""From a network ``model(x, labels)`` to a score function ``score_fn(x, t)``, with the 2021 reference's conventions.

The network never sees the time ``t`` itself but a *label* whose meaning depends on the SDE and on how the
model was trained (``continuous``), and its output is turned into a score differently for each family:

* VP continuous, and sub-VP whatever ``continuous`` says: labels ``t * 999`` (float);
  score ``-model(x, labels) / std(t)`` with the kernel std of the SDE.
* VP discrete: labels ``t * (N - 1) / T`` (float); score ``-model(x, labels) / sqrt(1 - alpha_bar_i)``, the DDPM
  table at ``i = floor(labels)``.
* VE continuous: labels ``std(t)``, the kernel std (``sigma(t)`` for the reference's VESDE); score
  ``model(x, labels)``.
* VE discrete: labels ``round((T - t) (N - 1) / T)`` (int64; index 0 is ``sigma_max``); score ``model(x, labels)``.

VP-type networks predict the noise ``eps`` of ``x(t) = alpha x(0) + std eps``, whose posterior mean is
``-std * score`` ([SDE] eq. (29) and Ho et al. 2020, eq. (11)); VE networks output the score directly. With
``VESDE(exact_marginal=True)`` the kernel std is ``sqrt(sigma(t)^2 - sigma_min^2)``, which vanishes at ``t = 0``.
``T = 1`` in every reference config, where the division by ``T`` is exact: integer and VP labels are then
bit-identical to the reference's, and float32 VE labels agree to a few float32 ulps (sde_lib evaluates
``sigma(t)`` as ``sigma_min exp(t log(sigma_max / sigma_min))``, the reference as a power).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from sde_lib import SDE, VESDE, VPSDE, ScoreFn, batch_broadcast, subVPSDE

ModelFn = Callable[[Tensor, Tensor], Tensor]
"""``model_fn(x, labels)``: the network's raw output, shaped like ``x``."""

#: the time-embedding scale of continuously trained VP/sub-VP networks: labels are ``t * 999`` whatever ``N``
VP_CONTINUOUS_LABEL_SCALE = 999


def get_model_fn(model: nn.Module, train: bool = False) -> ModelFn:
    """``model_fn(x, labels)``: ``model(x, labels)``, the model first put in training (``train=True``) or eval mode."""

    def model_fn(x: Tensor, labels: Tensor) -> Tensor:
        model.train(train)
        return model(x, labels)

    return model_fn


def check_model_output(out: Tensor, x: Tensor) -> Tensor:
    """``out`` if the network's output is shaped like its input ``x``, else ``ValueError`` naming both shapes."""
    if out.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}")
    return out


def _vp_score_fn(sde: VPSDE | subVPSDE, model_fn: ModelFn, continuous: bool) -> ScoreFn:
    """Noise-prediction networks: ``score = -eps_theta(x, labels) / std`` (table of the module docstring)."""
    use_continuous = continuous or isinstance(sde, subVPSDE)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        t = sde._check_xt(x, t)
        if use_continuous:
            labels = t * VP_CONTINUOUS_LABEL_SCALE
            std = sde.marginal_coeffs(t)[1]
        else:
            labels = t * (sde.N - 1) / sde.T
            std = sde._table("sqrt_1m_alphas_cumprod", t)[labels.long()]
        out = check_model_output(model_fn(x, labels), x)
        return -out / batch_broadcast(std, out)

    return score_fn


def _ve_score_fn(sde: VESDE, model_fn: ModelFn, continuous: bool) -> ScoreFn:
    """Score networks conditioned on the noise scale (continuous) or its index counted from ``sigma_max`` (discrete)."""

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        t = sde._check_xt(x, t)
        if continuous:
            labels = sde.marginal_coeffs(t)[1]
        else:
            labels = torch.round((sde.T - t) * (sde.N - 1) / sde.T).long()
        return check_model_output(model_fn(x, labels), x)

    return score_fn


def get_score_fn(sde: SDE, model: nn.Module, train: bool = False, continuous: bool = False) -> ScoreFn:
    """``score_fn(x, t)`` approximating ``grad_x log p_t(x)`` from ``model``, with the reference's label conventions.

    ``continuous=True`` for networks trained with continuous times (the ``training.continuous`` of the
    reference configs), ``False`` for the DDPM / SMLD step-indexed ones; the labels and output scalings are
    in the module docstring. ``t`` has shape ``(B,)`` in ``[0, T]`` and is cast to the dtype and device of ``x``.
    Supports :class:`sde_lib.VPSDE`, :class:`sde_lib.subVPSDE`, :class:`sde_lib.VESDE` and their subclasses;
    any other SDE raises ``ValueError``.
    """
    model_fn = get_model_fn(model, train=train)
    if isinstance(sde, (VPSDE, subVPSDE)):
        return _vp_score_fn(sde, model_fn, bool(continuous))
    if isinstance(sde, VESDE):
        return _ve_score_fn(sde, model_fn, bool(continuous))
    raise ValueError(
        f"get_score_fn supports VPSDE, subVPSDE and VESDE (the label conventions of the reference networks); "
        f"got {type(sde).__name__}"
    )


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point dtype of ``model``'s parameters (then buffers; the default dtype if it has neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def get_sampling_score_fn(
    sde: SDE, model: nn.Module, continuous: bool = False, dtype: torch.dtype | None = None
) -> ScoreFn:
    """The score function a sampler needs: :func:`get_score_fn` in eval mode, with explicit dtype handling.

    ``x`` and ``t`` are cast to ``dtype`` (default: :func:`model_dtype`, so a float32 network works inside a
    float64 sampler) before the labels are formed and the network is called, and the score is cast back to
    the dtype of ``x``. Gradients are left enabled (likelihoods differentiate through the score); wrap
    sampling in ``torch.no_grad()``.
    """
    compute_dtype = dtype if dtype is not None else model_dtype(model)
    if not compute_dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {compute_dtype}")
    score_fn = get_score_fn(sde, model, train=False, continuous=continuous)

    def sampling_score_fn(x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=compute_dtype, device=x.device)
        return score_fn(x.to(compute_dtype), t).to(x.dtype)

    return sampling_score_fn
