"""Super-resolution without training: the high-resolution image given its block means, as a linear inverse problem.

The low-resolution image ``low_res`` ``(B, C, H / f, W / f)`` holds the mean of each ``f x f`` block of the image
``x`` ``(B, C, H, W)``. Block averaging is linear; its orthonormal form is :class:`.operators.BlockAverage`,
``A x = f * block mean`` (each row has ``f^2`` entries ``1 / f``), so the measurement of ``low_res`` is
``y = f * low_res``. With that operator the two samplers of the other controllable tasks apply unchanged, with the
unconditional score of the high-resolution data:

* :func:`pc_superresolve` / :func:`get_pc_superresolver` (the reference's API style): PC sampling with the
  replacement method of [SDE] appendix I.2 (:class:`.known_values.KnownValueReplacement`), the approach Song et al.
  use for inpainting and colorization; the block means of the result equal ``low_res`` up to float rounding.
  Approximate even with the exact score (see :mod:`.known_values`).
* :func:`smc_superresolve`: SMCDiff (:mod:`.smc`), exact as the number of particles grows.

A model trained to take the low-resolution image as an input (SR3, Saharia et al. 2021; ``config.model.conditioning
= 'low_resolution'``, :mod:`models.conditioning`) is the alternative that needs training; ``--mode superresolve``
(:mod:`jobs.controllable`) runs either.

The data scaler of a config is affine per pixel (``2x - 1`` or the identity), so it commutes with block averaging:
``scaler(low_res)`` is the low-resolution image of ``scaler(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.score_model import Parameterization
from sde_lib import LinearSDE, ScoreFn

from ..common import resolve_device
from .known_values import Scaler, model_sampler, pc_inverse_problem, prepare_data
from .operators import BlockAverage
from .smc import RESAMPLE_BELOW, SMC_PARTICLES, _check_smc_options, smc_inverse_problem


def block_average_of(low_res: Tensor, factor: int) -> tuple[BlockAverage, Tensor]:
    """The operator of ``factor`` and the measurement ``factor * low_res`` of the block means ``low_res``
    ``(B, C, H / factor, W / factor)``; one-line ``ValueError`` naming ``factor`` or ``low_res``."""
    operator = BlockAverage(factor)
    return operator, operator.from_block_means(operator.check_measurement(low_res))


def pc_superresolve(
    sde: LinearSDE,
    score_fn: ScoreFn,
    low_res: Tensor,
    factor: int,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Super-resolution by PC sampling with the replacement method ([SDE] appendix I.2) on the block means.

    ``low_res`` ``(B, C, H / factor, W / factor)``: the mean of each ``factor x factor`` block of the images to
    generate, in the model's data space; ``score_fn`` the score of the images ``(B, C, H, W)``. After every
    corrector and predictor update of :func:`samplers.pc.pc_sample` (and at the start) the block means of ``x`` are
    replaced by a fresh draw of their forward marginal at the time the state represents, keeping the variation
    within each block. With ``denoise=True`` the block means of the result equal ``low_res`` up to float rounding.
    Other options as in :func:`samplers.pc_inpaint`.

    Returns ``(x, nfe)``.
    """
    low_res = prepare_data(sde, low_res, device, generator, predictor, corrector, snr, n_steps, eps, denoise, "low_res")
    operator, measurement = block_average_of(low_res, factor)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps, probability_flow=probability_flow,
                   eps=eps, progress=progress)
    return pc_inverse_problem(sde, score_fn, operator, measurement, denoise, generator, options)


def smc_superresolve(
    sde: LinearSDE,
    score_fn: ScoreFn,
    low_res: Tensor,
    factor: int,
    num_particles: int = SMC_PARTICLES,
    resample_below: float = RESAMPLE_BELOW,
    denoise: bool = True,
    eps: float = 1e-3,
    return_particles: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Super-resolution by SMCDiff (:func:`.smc.smc_inverse_problem` with :class:`.operators.BlockAverage`): images
    ``(B, C, H, W)`` drawn from the conditional law given their block means ``low_res``
    ``(B, C, H / factor, W / factor)``, asymptotically exactly in ``num_particles``. Options and result as
    :func:`samplers.smc_inpaint`; the block means of the result equal ``low_res`` up to float rounding.
    """
    operator, measurement = block_average_of(low_res, factor)
    _check_smc_options(sde, num_particles, resample_below, eps)
    measurement = measurement.to(resolve_device(device, generator, measurement))
    return smc_inverse_problem(sde, score_fn, operator, measurement, num_particles, resample_below, denoise, eps,
                               return_particles, generator, progress, "smc superresolve")


def get_pc_superresolver(
    sde: LinearSDE,
    predictor: str,
    corrector: str,
    inverse_scaler: Scaler | None,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    parameterization: Parameterization | str | None = None,
    denoise: bool = True,
    eps: float = 1e-5,
):
    """In the style of the reference's ``get_pc_inpainter``: ``superresolver(model, low_res, factor, generator=None,
    progress=False)`` returning ``inverse_scaler`` of the super-resolved images (:func:`pc_superresolve`); arguments
    as :func:`.inpainting.get_pc_inpainter`, checked here, before any sampling."""
    run = model_sampler(pc_superresolve, sde, predictor, corrector, inverse_scaler, snr, n_steps, probability_flow,
                        parameterization, denoise, eps)

    def superresolver(model: torch.nn.Module, low_res: Tensor, factor: int, generator=None, progress: bool = False):
        return run(model, low_res, factor, generator=generator, progress=progress)

    return superresolver
