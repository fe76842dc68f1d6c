"""Samplers and likelihoods built from an ml-collections config, with the 2021 reference's names and fields.

:func:`get_sampling_fn` reads ``config.sampling`` (``method`` in ``pc``, ``ode``, ``sde``, ``adaptive``, ``fast``;
``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``, ``probability_flow``) and
``config.training.continuous``, and returns ``fn(model) -> (samples, nfe)``. :func:`get_likelihood_fn` returns
``fn(model, data) -> (bpd, z, nfe)``. The network becomes a score function through
:func:`models.get_sampling_score_fn`, with the reference's conventions for each SDE.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from sde_lib import SDE
from base_lib.config import config_value

from .adaptive import adaptive_sde_sample
from .common import check_choice, check_shape
from .fast import fast_sample
from .likelihood import DIVERGENCES, bits_per_dim
from .ode import ode_sample
from .odeint import ODE_METHODS
from .pc import available_correctors, available_predictors, pc_sample
from .sde_solvers import sde_sample

SAMPLING_METHODS = ("pc", "ode", "sde", "adaptive", "fast")
Scaler = Callable[[Tensor], Tensor]


def _score_fn(sde: SDE, model: torch.nn.Module, continuous: bool):
    from models import get_sampling_score_fn  # the network package is only needed once a model is sampled

    return get_sampling_score_fn(sde, model, continuous=continuous)


def get_sampling_fn(
    config: Any,
    sde: SDE,
    shape: tuple[int, ...],
    inverse_scaler: Scaler | None,
    eps: float,
    score_fn_factory: Callable[[torch.nn.Module, bool], Callable[[Tensor, Tensor], Tensor]] | None = None,
):
    """The configured sampler as ``fn(model, generator=None, progress=False) -> (inverse_scaler(x), nfe)``.

    Fields (defaults in brackets where the reference configs have none):

    * ``config.sampling.method``: ``pc`` | ``ode`` | ``sde`` | ``adaptive`` | ``fast``.
    * ``pc``: ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``probability_flow``, ``noise_removal``.
    * ``ode``: ``noise_removal``, ``ode_method`` [``RK45``], ``rtol``/``atol`` [1e-5].
    * ``sde``: ``sde_method`` [``euler``], ``dt`` [1e-3], ``noise_removal``.
    * ``adaptive``: ``rtol`` [1e-2], ``noise_removal``.
    * ``fast``: ``nfe`` [20], ``order`` [solver default], ``schedule`` [solver default], ``noise_removal`` [False].

    ``config.training.continuous`` selects the score parameterization for PC, as the reference does. The ODE and
    other continuous-time samplers use the continuous one. All arguments are checked here, before any sampling.
    ``score_fn_factory(model, continuous) -> score_fn`` replaces :func:`models.get_sampling_score_fn` as the way
    the network becomes the score the sampler follows (e.g. a guided score, :mod:`jobs.conditional`).
    """
    method = check_choice("config.sampling.method", str(config_value(config, "sampling.method")).lower(), SAMPLING_METHODS)
    shape = check_shape(shape)
    get = lambda field, default=...: config_value(config, f"sampling.{field}", default)  # noqa: E731
    denoise = bool(get("noise_removal", method != "fast"))
    continuous = bool(config_value(config, "training.continuous", True))
    device = config_value(config, "device", None)
    scale = inverse_scaler if inverse_scaler is not None else (lambda x: x)
    if score_fn_factory is not None and not callable(score_fn_factory):
        raise ValueError(f"score_fn_factory must be callable as factory(model, continuous) -> score_fn, got {score_fn_factory!r}")
    make_score_fn = score_fn_factory if score_fn_factory is not None else (lambda model, cont: _score_fn(sde, model, cont))

    if method == "pc":
        predictor = check_choice("config.sampling.predictor", str(get("predictor")).lower(), available_predictors())
        corrector = check_choice("config.sampling.corrector", str(get("corrector")).lower(), available_correctors())
        options = dict(
            predictor=predictor, corrector=corrector, snr=float(get("snr")), n_steps=int(get("n_steps_each")),
            probability_flow=bool(get("probability_flow", False)), denoise=denoise, eps=eps,
        )
        sampler, score_continuous = pc_sample, continuous
    elif method == "ode":
        ode_method = check_choice("config.sampling.ode_method", get("ode_method", "RK45"), ODE_METHODS)
        options = dict(method=ode_method, rtol=float(get("rtol", 1e-5)), atol=float(get("atol", 1e-5)), denoise=denoise, eps=eps)
        sampler, score_continuous = ode_sample, True
    elif method == "sde":
        options = dict(method=get("sde_method", "euler"), dt=float(get("dt", 1e-3)), denoise=denoise, eps=eps)
        sampler, score_continuous = sde_sample, True
    elif method == "adaptive":
        options = dict(rtol=float(get("rtol", 1e-2)), denoise=denoise, eps=eps)
        sampler, score_continuous = adaptive_sde_sample, True
    else:
        options = dict(nfe=int(get("nfe", 20)), order=get("order", None), schedule=get("schedule", None), denoise=denoise, eps=eps)
        sampler, score_continuous = fast_sample, True

    def sampling_fn(model: torch.nn.Module, generator: torch.Generator | None = None, progress: bool = False):
        score_fn = make_score_fn(model, score_continuous)
        with torch.no_grad():
            x, nfe = sampler(sde, score_fn, shape, generator=generator, device=device, progress=progress, **options)
        return scale(x), nfe

    return sampling_fn


def get_likelihood_fn(
    sde: SDE,
    inverse_scaler: Scaler | None,
    hutchinson_type: str = "Rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    eps: float = 1e-5,
    n_bins: int = 256,
):
    """Bits/dim of dequantized data as ``fn(model, data, generator=None) -> (bpd, z, nfe)``, as the 2021 reference.

    ``data`` is in the model's space (after the data scaler); ``inverse_scaler`` maps it back to ``[0, 1]``.
    The reference's defaults are kept (scipy ``RK45``, tolerances 1e-5, ``eps=1e-5``). ``method="dopri5"``
    is the faster torch-native solver. ``n_bins`` is the number of quantization levels (the reference
    hard-codes 256).
    """
    divergence = check_choice("hutchinson_type", hutchinson_type.lower(), DIVERGENCES)
    check_choice("method", method, ODE_METHODS)

    def likelihood_fn(model: torch.nn.Module, data: Tensor, generator: torch.Generator | None = None):
        score_fn = _score_fn(sde, model, True)
        return bits_per_dim(
            sde, score_fn, data, n_bins=n_bins, inverse_scaler=inverse_scaler, divergence=divergence,
            rtol=rtol, atol=atol, eps=eps, method=method, generator=generator,
        )

    return likelihood_fn
