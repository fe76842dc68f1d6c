"""Colorization as inpainting of the grey level in a decoupled colour space ([SDE] appendix I.3).

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021).

* :func:`colour_decoupling_matrix`: the orthogonal map of RGB to a space whose first channel is the grey level.
  :func:`grey_level_operator` gives the measurement of that channel (:class:`.operators.GreyLevelOperator`), for
  :func:`pc_colorize` and :func:`.smc.smc_colorize`.
* :func:`pc_colorize` / :func:`get_pc_colorizer` (the reference's API): the replacement method of
  :mod:`.known_values` with the grey channel as the measurement.

Defect of the 2021 reference's ``controllable_generation.py`` fixed here (the others are in :mod:`.known_values`):

3. Its colour transform is a rounded float32 matrix inverted numerically; here it is the exact orthogonal
   matrix (:func:`colour_decoupling_matrix`) and its transpose.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.score_model import Parameterization
from sde_lib import SDE, ScoreFn

from .known_values import Scaler, model_sampler, pc_inverse_problem, prepare_data
from .operators import GreyLevelOperator


def colour_decoupling_matrix(dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The orthogonal ``3 x 3`` matrix ``M`` whose rows are an orthonormal basis with first row ``(1, 1, 1) / sqrt(3)``.

    ``y = M x`` per pixel maps RGB to a space whose first channel ``(r + g + b) / sqrt(3) = sqrt(3) grey`` is the
    grey level (the mean of the channels) and whose other two channels, ``(-2r + g + b) / sqrt(6)`` and
    ``(g - b) / sqrt(2)``, the two colour differences orthogonal to it. These are the (Helmert) vectors of the
    reference's matrix, used there as columns. ``M^{-1} = M^T``. Because ``M`` is orthogonal and the noise of the
    SDEs is isotropic, ``M x(t)`` is the same diffusion started from ``M x(0)``. ``ChannelTransform(M)`` applies it
    to images ``(B, 3, ...)``.
    """
    rows = [[1.0, 1.0, 1.0], [-2.0, 1.0, 1.0], [0.0, 1.0, -1.0]]
    matrix = torch.tensor(rows, dtype=torch.float64)
    matrix = matrix / matrix.norm(dim=1, keepdim=True)
    return matrix.to(dtype=dtype, device=device)


def grey_level_operator(data: Tensor) -> GreyLevelOperator:
    """Colorization as a linear inverse problem: the grey channel of :func:`colour_decoupling_matrix` (in the dtype
    and device of ``data``) as the measurement of RGB images ``(B, 3, ...)``; ``ValueError`` naming ``data`` for
    another channel count."""
    operator = GreyLevelOperator(colour_decoupling_matrix(data.dtype, data.device))
    operator.check_data(data)
    return operator


def pc_colorize(
    sde: SDE,
    score_fn: ScoreFn,
    data: Tensor,
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
    """Colorization by PC sampling, [SDE] appendix I.3: inpainting of the grey channel in the decoupled colour space.

    ``data`` ``(B, 3, ...)``: images whose grey level (the mean of the three channels) is kept; usually grey
    images with equal channels, but any colour image works (only its grey level is read). In the space of
    :func:`colour_decoupling_matrix` the first channel is known and the two colour channels are generated, by the
    same replacement as :func:`.pc_inpaint` (:func:`.known_values.pc_inverse_problem` with
    :class:`.operators.GreyLevelOperator`). With ``denoise=True`` the grey level of the result equals that of
    ``data`` up to float rounding of the two channel transforms. Options as in :func:`.pc_inpaint`.

    Returns ``(x, nfe)``.
    """
    data = prepare_data(sde, data, device, generator, predictor, corrector, snr, n_steps, eps, denoise)
    operator = grey_level_operator(data)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps, probability_flow=probability_flow,
                   eps=eps, progress=progress)
    return pc_inverse_problem(sde, score_fn, operator, operator.project(data), denoise, generator, options)


def get_pc_colorizer(
    sde: SDE,
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
    """The reference's ``get_pc_colorizer``: ``colorizer(model, gray_scale_img, generator=None, progress=False)``
    returning ``inverse_scaler`` of the colorized images (:func:`pc_colorize`); arguments as
    :func:`.get_pc_inpainter`."""
    run = model_sampler(pc_colorize, sde, predictor, corrector, inverse_scaler, snr, n_steps, probability_flow,
                        parameterization, denoise, eps)

    def colorizer(model: torch.nn.Module, gray_scale_img: Tensor, generator=None, progress: bool = False):
        return run(model, gray_scale_img, generator=generator, progress=progress)

    return colorizer
