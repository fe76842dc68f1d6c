"""Known-value replacement on a linear measurement: the PC machinery shared by inpainting, colorization and
super-resolution, and the checks of their data.

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021),
appendices I.2-I.3.

The replacement method ([SDE] appendix I.2): PC sampling in which the measured part of the state is replaced, after
every predictor and corrector update, by a fresh draw of its forward marginal at the time the state then
represents. :class:`KnownValueReplacement` is that replacement as the ``update_hook`` of
:func:`samplers.pc.pc_sample`, so there is one PC loop, written once for every linear measurement ``y = A x`` with
orthonormal rows (:mod:`.operators`): the known values of inpainting (:class:`.operators.MaskOperator`), the grey
level of colorization (:class:`.operators.GreyLevelOperator`), the block means of super-resolution
(:class:`.operators.BlockAverage`). :func:`pc_inverse_problem` runs it and :func:`model_sampler` is the
reference-style ``get_pc_inpainter`` / ``get_pc_colorizer`` / ``get_pc_superresolver`` body; :func:`check_data` and
:func:`check_mask` check the inputs of every inpainting method (:mod:`.smc` too).

Defects of the 2021 reference's ``controllable_generation.py`` fixed here (the third, of its colour transform, is
in :mod:`.colorization`):

1. Its update sets ``x_mean = x * (1 - mask) + data_mean * mask`` from the *noisy* new ``x``, so with
   ``denoise=True`` the unknown values returned are the last noisy iterate, not its noise-free mean. Here the
   unknown values of ``x_mean`` come from the update's ``x_mean`` and the known ones are the marginal mean.
2. After the predictor step from ``t_i`` it draws the known values at ``t_i``, one step noisier than the state
   (which the next corrector and predictor treat as being at ``t_{i+1}``); it also starts from the clean data
   in the known values. Here they are drawn at the time the state represents (``T`` at the start, ``t_{i+1}``
   after a predictor step, ``0`` after the last), and with ``denoise=True`` they come back exactly equal to the
   data.

Known limitation of the replacement method (not a defect of the implementation): it feeds the score of
``p_t(x)`` with known values drawn from ``p_t(x_known | data)``, independently of the unknown ones; the
unknown values then follow the reverse SDE of ``p_t(x_unknown | x_known(t))`` rather than of
``p_t(x_unknown | x_known(0) = data)`` (for a general ``A``: ``A x`` for the known values, the part orthogonal to the
rows of ``A`` for the unknown ones). Even with the exact score and infinitely many steps the result is not
the exact conditional law when known and unknown values are correlated; on a 2-D Gaussian with correlation
0.8 and ``y = 1.5`` (VP), the predictor-only limit has conditional mean 0.75 (exact: 1.2) and variance 0.494
(exact: 0.36). Langevin corrector steps pull it towards the exact conditional (they mix at every noise level,
where near ``t = 0`` the two conditionals agree): ``tests/test_controllable.py`` states the figures.
:mod:`.smc` (SMCDiff) is exact in the limit of many particles.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from models.score_model import Parameterization, ScoreModel, resolve_parameterization
from sde_lib import SDE, LinearSDE, ScoreFn, batch_broadcast
from base_lib.checks import check_bool

from ..common import check_eps, check_linear_sde, check_positive, resolve_device
from ..pc import check_n_steps, get_corrector, get_predictor, pc_sample
from .operators import ChannelTransform, LinearMeasurement, MaskOperator, _describe  # noqa: F401 (ChannelTransform: re-exported)

Scaler = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------------------------- argument checks
def check_data(data: Tensor, name: str = "data") -> Tensor:
    """``data`` if it is a floating-point tensor of shape ``(B, ...)`` with ``B >= 1``, else ``ValueError``."""
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, ...), got {describe(data)}")
    return data


def check_mask(mask: Tensor, data: Tensor) -> Tensor:
    """``mask`` (1 = known, 0 = to generate) as a boolean tensor of the shape of ``data``, else ``ValueError``.

    Any shape that broadcasts to ``data.shape`` is accepted (e.g. ``(1, 1, H, W)`` for one mask over a batch of
    images); values must be exactly 0 or 1 (bool, integer or floating point).
    """
    return MaskOperator.from_mask(mask, data).mask


def describe(value: object) -> str:
    """What ``value`` is, for an error message: a tensor's dtype and shape, else its type's name."""
    return _describe(value)


def check_pc_options(sde: SDE, predictor: str, corrector: str, snr, n_steps, eps, denoise) -> None:
    """The PC options of the replacement samplers, checked before any work (``ValueError`` naming the parameter)."""
    get_predictor(predictor), get_corrector(corrector)
    check_positive("snr", snr), check_n_steps(n_steps), check_eps(eps, sde), check_bool("denoise", denoise)


# ---------------------------------------------------------------------------------------------- known-value replacement
class KnownValueReplacement:
    """The PC update hook of the replacement method ([SDE] appendix I.2) for a linear measurement ``y = A x`` with
    orthonormal rows (:mod:`.operators`).

    A call at time ``t`` replaces the measured part of ``x`` by a fresh draw ``alpha_t y + sigma_t A z`` of its
    forward marginal (``A x(t) | x(0)`` is ``N(alpha_t A x(0), sigma_t^2 I_m)`` for a linear SDE, because ``A`` has
    orthonormal rows and the noise is isotropic) and that of ``x_mean`` by the marginal mean ``alpha_t y``
    (``operator.complete``), keeping the part of each orthogonal to the rows of ``A`` as the update left it.
    """

    def __init__(
        self,
        sde: LinearSDE,
        operator: LinearMeasurement,
        measurement: Tensor,
        generator: torch.Generator | None = None,
    ):
        self.sde = sde  # the forward SDE (linear drift), whose marginal_prob gives the law of A x(t)
        self.operator = operator  # the measurement A
        self.measurement = measurement  # y = A x(0), shaped as operator.project's output
        self.generator = generator  # source of the noise of the draws

    def __call__(self, x: Tensor, x_mean: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        mean, std = self.sde.marginal_prob(self.measurement, t)  # alpha_t y: the drift is linear
        known = mean + batch_broadcast(std, mean) * self.operator.standard_normal(mean, self.generator)
        return self.operator.complete(x, known), self.operator.complete(x_mean, mean)

    def finish(self, x: Tensor) -> Tensor:
        """``x`` with its measured part set to the measurement exactly (up to the rounding of ``complete``)."""
        return self.operator.complete(x, self.measurement)


def prepare_data(sde: SDE, data: Tensor, device, generator, predictor: str, corrector: str, snr, n_steps, eps, denoise,
                 name: str = "data"):
    """Check the shared arguments of the PC samplers of :mod:`.inpainting`, :mod:`.colorization` and
    :mod:`.superresolution` (before any work) and move ``data`` to the sampling device."""
    check_linear_sde(sde)
    check_data(data, name)
    check_pc_options(sde, predictor, corrector, snr, n_steps, eps, denoise)
    return data.to(resolve_device(device, generator, data))


def pc_inverse_problem(
    sde: LinearSDE,
    score_fn: ScoreFn,
    operator: LinearMeasurement,
    measurement: Tensor,
    denoise: bool,
    generator: torch.Generator | None,
    pc_options: dict,
) -> tuple[Tensor, int]:
    """PC sampling of the data given ``A x = measurement`` with :class:`KnownValueReplacement` as the update hook
    (shared by inpainting, colorization and super-resolution); with ``denoise`` the measured part of the result is
    the measurement exactly (up to the rounding of ``operator.complete``). Samples on the device and in the dtype of
    ``measurement``."""
    hook = KnownValueReplacement(sde, operator, measurement, generator)
    x, nfe = pc_sample(
        sde, score_fn, operator.data_shape(measurement), denoise=denoise, generator=generator,
        device=measurement.device, dtype=measurement.dtype, update_hook=hook, **pc_options,
    )
    return (hook.finish(x) if denoise else x), nfe


def model_sampler(sampler, sde: SDE, predictor: str, corrector: str, inverse_scaler: Scaler | None, snr: float,
                  n_steps: int, probability_flow: bool, parameterization: Parameterization | str | None, denoise: bool,
                  eps: float):
    """The body of the reference-style ``get_pc_inpainter`` / ``get_pc_colorizer`` / ``get_pc_superresolver``: the
    arguments checked now, and ``run(model, data, *extra, generator=None, progress=False)`` returning
    ``inverse_scaler`` of ``sampler``'s samples (:func:`.pc_inpaint`, :func:`.pc_colorize` or
    :func:`.pc_superresolve`; ``extra``: the mask or the factor) with the score of ``model`` read through
    :class:`models.ScoreModel` with ``parameterization``, without gradients."""
    check_linear_sde(sde)
    parameterization = resolve_parameterization(sde, parameterization)
    check_pc_options(sde, predictor, corrector, snr, n_steps, eps, denoise)
    scale = inverse_scaler if inverse_scaler is not None else (lambda x: x)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                   probability_flow=probability_flow, denoise=denoise, eps=eps)

    def run(model: torch.nn.Module, data: Tensor, *extra, generator=None, progress: bool = False) -> Tensor:
        score_fn = ScoreModel(model, sde, parameterization).score_fn()
        with torch.no_grad():
            x, _ = sampler(sde, score_fn, data, *extra, generator=generator, progress=progress, **options)
        return scale(x)

    return run
