"""Samplers and likelihoods built from an ml-collections config, with the 2021 reference's names and fields.

:func:`get_sampling_fn` reads ``config.sampling`` (``method`` in ``pc``, ``ode``, ``sde``, ``adaptive``, ``fast``, ``edm``;
``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``, ``probability_flow``) and returns
``fn(model) -> (samples, nfe)``. :func:`get_likelihood_fn` returns ``fn(model, data) -> (bpd, z, nfe)``. The network
becomes a score function through :class:`models.ScoreModel` with the parameterization the config trains it with
(:func:`models.parameterization_from_config`); a method that evaluates the score at arbitrary times is refused
here, when the config is read, for a network that knows its ``N`` noise levels only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

import data_lib
from models.precision import PRECISION_SETTINGS
from models.score_model import Parameterization, ScoreModel, parameterization_from_config, resolve_parameterization
from sde_lib import SDE, ScoreFn
from base_lib.checks import check_positive_int
from base_lib.config import config_value

from .adaptive import adaptive_sde_sample
from .denoised_projection import clip_denoised
from .common import check_choice, check_shape
from .edm import check_edm_options, edm_sample
from .fast import fast_sample, order_for_budget, solver_steps
from .fast_tuning import (
    FastSolverChoice, FastSolverOptions, default_most_pilot_points, default_pilot_points, tune_fast_sample,
)
from .likelihood import DIVERGENCES, bits_per_dim
from .ode import ode_sample
from .odeint import ODE_METHODS
from .pc import available_correctors, available_predictors, pc_sample
from .sde_solvers import sde_sample

SAMPLING_METHODS = ("pc", "ode", "sde", "adaptive", "fast", "edm")
#: the methods that evaluate the score at arbitrary times (PC steps through the SDE's own N levels)
CONTINUOUS_TIME_METHODS = ("ode", "sde", "adaptive", "fast", "edm")
Scaler = Callable[[Tensor], Tensor]
ScoreFactory = Callable[[ScoreModel], ScoreFn]
"""``factory(score_model) -> score_fn(x, t)``: the score a sampler follows (default: ``score_model.score_fn()``)."""


def check_continuous_time(
    parameterization: Parameterization, what: str, sde: SDE, remedy: str = "use config.sampling.method='pc'"
) -> None:
    """``ValueError`` naming ``what`` (and ending with ``remedy``) when ``parameterization`` cannot be evaluated at
    arbitrary times."""
    if not parameterization.continuous_time:
        raise ValueError(
            f"{what} evaluates the score at arbitrary times, but this config's network (parameterization "
            f"{parameterization.name!r}, from training.continuous=False or model.parameterization) knows only the "
            f"N={sde.N} noise levels of its training; {remedy}"
        )


def sampling_score_transform(config: Any, sde: SDE) -> Callable[[ScoreFn], ScoreFn]:
    """The map every config-driven sampler applies to the score it follows: with ``config.sampling.clip_denoised``
    [False], :func:`samplers.clip_denoised` to the data's range (:func:`data_lib.model_data_range`), else the
    identity. ``ValueError`` naming the field for data without a bounded range (the toy densities)."""
    if not bool(config_value(config, "sampling.clip_denoised", False)):
        return lambda score_fn: score_fn
    data_range = data_lib.model_data_range(config)
    if data_range is None:
        raise ValueError(
            f"config.sampling.clip_denoised=True clips to the data's range, but config.data.dataset="
            f"{config.data.dataset!r} has none (toy densities are unbounded); set it to False"
        )
    return lambda score_fn: clip_denoised(sde, score_fn, data_range)


def followed_score(config: Any, sde: SDE, score_fn_factory: ScoreFactory | None) -> Callable[[torch.nn.Module], ScoreFn]:
    """``follow(model) -> score_fn``: the score a config-driven sampler follows for the network ``model``: read
    through :class:`models.ScoreModel` with the config's parameterization, guided by ``score_fn_factory``, and with
    :func:`sampling_score_transform` applied. Checked here, before any sampling."""
    parameterization = parameterization_from_config(config, sde)
    method = str(config_value(config, "sampling.method")).lower()
    if method in CONTINUOUS_TIME_METHODS:
        check_continuous_time(parameterization, f"config.sampling.method={method!r}", sde)
    if score_fn_factory is not None and not callable(score_fn_factory):
        raise ValueError(f"score_fn_factory must be callable as factory(score_model) -> score_fn, got {score_fn_factory!r}")
    make_score_fn = score_fn_factory if score_fn_factory is not None else (lambda score_model: score_model.score_fn())
    transform = sampling_score_transform(config, sde)
    return lambda model: transform(make_score_fn(ScoreModel.from_config(config, model, sde)))


def fast_tuning_enabled(config: Any) -> bool:
    """Whether ``config.sampling.fast_tuning`` asks for ``fast_sample``'s options to be tuned per checkpoint (method
    ``fast`` only)."""
    method = str(config_value(config, "sampling.method", "")).lower()
    return method == "fast" and bool(config_value(config, "sampling.fast_tuning", False))


def fast_tuning_points(config: Any, data_shape: Sequence[int]) -> tuple[int, int]:
    """The pilot of ``config.sampling.fast_tuning`` as ``(first, most)`` points: ``config.sampling.fast_tuning_points``
    at once if set; unset, a screened pilot (:func:`samplers.tune_fast_sample`'s ``first_points``): every candidate
    on :func:`samplers.fast_tuning.default_pilot_points`, the finalists on
    :func:`samplers.fast_tuning.default_most_pilot_points`."""
    points = config_value(config, "sampling.fast_tuning_points", None)
    if points is not None:
        points = check_positive_int("config.sampling.fast_tuning_points", points)
        return points, points
    return default_pilot_points(data_shape), default_most_pilot_points(data_shape)


def get_fast_tuning_fn(
    config: Any, sde: SDE, data_shape: tuple[int, ...], eps: float,
    factory_for_points: Callable[[Tensor], ScoreFactory] | None = None,
):
    """:func:`samplers.tune_fast_sample` for the config's sampler as ``fn(model, generator=None, progress=False) ->
    FastSolverChoice``: the options of ``fast_sample`` for the ODE's share of ``config.sampling.nfe`` (less the
    evaluation of ``noise_removal``, which follows the ODE and is the same for every option), chosen on
    :func:`fast_tuning_points` pilot samples drawn from the prior with ``generator``, following the
    score :func:`get_sampling_fn` follows. ``factory_for_points(index)`` guides the pilot samples at ``index``
    (int64 positions among the pilot's, on the CPU), e.g. towards a class label per sample. The fixed default is
    kept unless a candidate leads by ``config.sampling.fast_tuning_evidence`` [0] standard errors on the pilot.
    """
    method = config_value(config, "sampling.method")
    if str(method).lower() != "fast":
        raise ValueError(f"config.sampling.fast_tuning tunes method 'fast'; config.sampling.method is {method!r}")
    first, most = fast_tuning_points(config, data_shape)
    nfe = check_positive_int("config.sampling.nfe", config_value(config, "sampling.nfe", 20))
    nfe -= int(bool(config_value(config, "sampling.noise_removal", False)))  # the ODE's share of the budget
    nfe = check_positive_int("config.sampling.nfe less noise_removal's evaluation", nfe)
    evidence = float(config_value(config, "sampling.fast_tuning_evidence", 0.0))
    if factory_for_points is not None and not callable(factory_for_points):
        raise ValueError(f"factory_for_points must be callable as factory_for_points(index) -> score factory; "
                         f"got {factory_for_points!r}")

    def follow_points(index: Tensor) -> Callable[[torch.nn.Module], ScoreFn]:
        return followed_score(config, sde, None if factory_for_points is None else factory_for_points(index))

    follow = follow_points(torch.arange(most))
    shape = check_shape((most, *data_shape))
    device = config_value(config, "device", None)

    def tuning_fn(
        model: torch.nn.Module, generator: torch.Generator | None = None, progress: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> FastSolverChoice:
        score_for_points = None if factory_for_points is None else (lambda index: follow_points(index)(model))
        with torch.no_grad():
            return tune_fast_sample(sde, follow(model), shape, nfe, eps=eps, generator=generator, device=device,
                                    progress=progress, evidence=evidence, first_points=first,
                                    score_for_points=score_for_points, on_progress=on_progress)

    return tuning_fn


def check_fast_budget(options: dict[str, Any]) -> None:
    """``ValueError`` naming ``config.sampling.nfe`` when ``fast_sample`` with ``options`` could not start: each order
    needs that many evaluations, and ``noise_removal`` one more (:func:`samplers.fast.solver_steps`)."""
    nfe, denoise = check_positive_int("config.sampling.nfe", options["nfe"]), options["denoise"]
    method = options.get("method") or "dpm_solver"
    order = order_for_budget(method, options["order"], nfe, denoise)
    if isinstance(order, int) and not isinstance(order, bool):  # fast_sample itself names a bad order
        try:
            solver_steps(method, order, nfe, denoise)
        except ValueError as error:
            raise ValueError(f"config.sampling.nfe is too small for the fast sampler (config.sampling.order, "
                             f"noise_removal): {error}") from None


def get_sampling_fn(
    config: Any,
    sde: SDE,
    shape: tuple[int, ...],
    inverse_scaler: Scaler | None,
    eps: float,
    score_fn_factory: ScoreFactory | None = None,
    fast_options: FastSolverOptions | None = None,
):
    """The configured sampler as ``fn(model, generator=None, progress=False) -> (inverse_scaler(x), nfe)``.

    Fields (defaults in brackets where the reference configs have none):

    * ``config.sampling.method``: ``pc`` | ``ode`` | ``sde`` | ``adaptive`` | ``fast`` | ``edm``.
    * ``pc``: ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``probability_flow``, ``noise_removal``.
    * ``ode``: ``noise_removal``, ``ode_method`` [``RK45``], ``rtol``/``atol`` [1e-5].
    * ``sde``: ``sde_method`` [``euler``], ``dt`` [1e-3], ``noise_removal``.
    * ``adaptive``: ``rtol`` [1e-2], ``noise_removal``.
    * ``fast``: ``nfe`` [20], ``order`` [solver default], ``schedule`` [solver default], ``noise_removal`` [False];
      ``fast_options`` (e.g. a :func:`get_fast_tuning_fn` choice) replaces ``order`` and ``schedule``, which must
      then be unset.
    * ``edm``: ``nfe`` [35] (``N = (nfe + 1) // 2`` Heun steps, ``2N - 1`` evaluations), ``rho`` [7], ``s_churn`` [0],
      ``s_min`` [0], ``s_max`` [no bound], ``s_noise`` [1]: :func:`samplers.edm_sample`.

    ``model`` is the network; it is read through :class:`models.ScoreModel` with the config's parameterization,
    in the mixed precision ``mixed_precision`` [``'auto'``] resolves to on the model's device (``'auto'``: bf16 where
    the device has bf16 matrix units; :func:`models.precision.resolve_mixed_precision`). The sampler's state stays in float32.
    All arguments are checked here, before any sampling. ``score_fn_factory(score_model) -> score_fn`` replaces
    ``score_model.score_fn()`` as the score the sampler follows (e.g. a guided score, :mod:`jobs.conditional`);
    ``clip_denoised`` [False] clips that score's denoised estimate to the data's range
    (:func:`sampling_score_transform`).
    """
    method = check_choice("config.sampling.method", str(config_value(config, "sampling.method")).lower(), SAMPLING_METHODS)
    shape = check_shape(shape)
    get = lambda field, default=...: config_value(config, f"sampling.{field}", default)  # noqa: E731
    denoise = bool(get("noise_removal", method != "fast"))
    check_choice("config.sampling.mixed_precision", get("mixed_precision", "auto"), PRECISION_SETTINGS)
    follow = followed_score(config, sde, score_fn_factory)
    device = config_value(config, "device", None)
    scale = inverse_scaler if inverse_scaler is not None else (lambda x: x)

    if method == "pc":
        predictor = check_choice("config.sampling.predictor", str(get("predictor")).lower(), available_predictors())
        corrector = check_choice("config.sampling.corrector", str(get("corrector")).lower(), available_correctors())
        options = dict(
            predictor=predictor, corrector=corrector, snr=float(get("snr")), n_steps=int(get("n_steps_each")),
            probability_flow=bool(get("probability_flow", False)), denoise=denoise, eps=eps,
        )
        sampler = pc_sample
    elif method == "ode":
        ode_method = check_choice("config.sampling.ode_method", get("ode_method", "RK45"), ODE_METHODS)
        options = dict(method=ode_method, rtol=float(get("rtol", 1e-5)), atol=float(get("atol", 1e-5)), denoise=denoise, eps=eps)
        sampler = ode_sample
    elif method == "sde":
        options = dict(method=get("sde_method", "euler"), dt=float(get("dt", 1e-3)), denoise=denoise, eps=eps)
        sampler = sde_sample
    elif method == "adaptive":
        options = dict(rtol=float(get("rtol", 1e-2)), denoise=denoise, eps=eps)
        sampler = adaptive_sde_sample
    elif method == "fast":
        options = dict(nfe=int(get("nfe", 20)), order=get("order", None), schedule=get("schedule", None), denoise=denoise, eps=eps)
        if fast_options is not None:
            if not isinstance(fast_options, FastSolverOptions):
                raise ValueError(f"fast_options must be FastSolverOptions, got {type(fast_options).__name__}")
            if options["order"] is not None or options["schedule"] is not None:
                raise ValueError("config.sampling.order and config.sampling.schedule must be unset when fast_sample's "
                                 "options are given (config.sampling.fast_tuning=True chooses them)")
            options |= fast_options.kwargs()
        check_fast_budget(options)
        sampler = fast_sample
    else:
        s_max = get("s_max", None)
        try:
            checked = check_edm_options(
                (int(get("nfe", 35)) + 1) // 2, get("rho", 7.0), get("s_churn", 0.0), get("s_min", 0.0),
                math.inf if s_max is None else s_max, get("s_noise", 1.0),
            )
        except ValueError as error:  # EDM's names: S_min is config.sampling.s_min, steps come from nfe
            raise ValueError(f"config.sampling (method 'edm', fields nfe, rho, s_churn, s_min, s_max, s_noise): "
                             f"{error}") from None
        options = dict(zip(("steps", "rho", "S_churn", "S_min", "S_max", "S_noise"), checked), eps=eps)
        sampler = edm_sample

    def sampling_fn(model: torch.nn.Module, generator: torch.Generator | None = None, progress: bool = False):
        score_fn = follow(model)
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
    parameterization: Parameterization | str | None = None,
):
    """Bits/dim of dequantized data as ``fn(model, data, generator=None) -> (bpd, z, nfe)``, as the 2021 reference.

    ``data`` is in the model's space (after the data scaler); ``inverse_scaler`` maps it back to ``[0, 1]``.
    The reference's defaults are kept (scipy ``RK45``, tolerances 1e-5, ``eps=1e-5``). ``method="dopri5"``
    is the faster torch-native solver. ``n_bins`` is the number of quantization levels (the reference
    hard-codes 256). ``model`` is read through :class:`models.ScoreModel` with ``parameterization`` (``None``: the
    SDE's continuous-time default); a step-indexed one is refused.
    """
    parameterization = resolve_parameterization(sde, parameterization)
    check_continuous_time(parameterization, "the likelihood (probability-flow ODE)", sde, "it has no likelihood")
    divergence = check_choice("hutchinson_type", hutchinson_type.lower(), DIVERGENCES)
    check_choice("method", method, ODE_METHODS)

    def likelihood_fn(model: torch.nn.Module, data: Tensor, generator: torch.Generator | None = None):
        score_fn = ScoreModel(model, sde, parameterization).score_fn()
        return bits_per_dim(
            sde, score_fn, data, n_bins=n_bins, inverse_scaler=inverse_scaler, divergence=divergence,
            rtol=rtol, atol=atol, eps=eps, method=method, generator=generator,
        )

    return likelihood_fn
