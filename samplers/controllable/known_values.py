"""Known-value replacement: the PC machinery shared by inpainting and colorization, and the checks of their data.

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021),
appendices I.2-I.3.

The replacement method ([SDE] appendix I.2): PC sampling in which the known values are replaced, after every
predictor and corrector update, by a fresh draw of the forward marginal of the data at the time the state then
represents. :class:`KnownValueReplacement` is that replacement as the ``update_hook`` of
:func:`samplers.pc.pc_sample`, so there is one PC loop; it works in an optional orthogonal channel space
(:class:`ChannelTransform`), which is how colorization (:mod:`.colorization`) reuses it. :func:`pc_with_known_values`
runs it and :func:`model_sampler` is the reference-style ``get_pc_inpainter`` / ``get_pc_colorizer`` body;
:func:`check_data` and :func:`check_mask` check the inputs of every inpainting method (:mod:`.smc` too).

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
``p_t(x_unknown | x_known(0) = data)``. Even with the exact score and infinitely many steps the result is not
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
from sde_lib import SDE, ScoreFn
from base_lib.checks import check_bool

from ..common import check_eps, check_positive, check_sde, resolve_device
from ..pc import check_n_steps, get_corrector, get_predictor, pc_sample

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
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor of 0s and 1s broadcastable to {tuple(data.shape)}, got {describe(mask)}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, data.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != data.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {tuple(data.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask values must be 0 (to generate) or 1 (known)")
    return mask.to(device=data.device, dtype=torch.bool).expand(data.shape)


def describe(value: object) -> str:
    """What ``value`` is, for an error message: a tensor's dtype and shape, else its type's name."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_pc_options(sde: SDE, predictor: str, corrector: str, snr, n_steps, eps, denoise) -> None:
    """The PC options of the replacement samplers, checked before any work (``ValueError`` naming the parameter)."""
    get_predictor(predictor), get_corrector(corrector)
    check_positive("snr", snr), check_n_steps(n_steps), check_eps(eps, sde), check_bool("denoise", denoise)


# ---------------------------------------------------------------------------------------------- known-value replacement
class ChannelTransform:
    """The orthogonal map ``x -> M x`` applied to the channels (dimension 1) of ``(B, C, ...)`` tensors, and its inverse."""

    def __init__(self, matrix: Tensor):
        self.matrix = matrix  # (C, C) orthogonal matrix, in the dtype and device of the data

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ij,bj...->bi...", self.matrix, x)

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("ji,bj...->bi...", self.matrix, y)


class KnownValueReplacement:
    """The PC update hook of the replacement method ([SDE] appendix I.2), optionally in an orthogonal channel space.

    With ``u = transform(x)`` (identity by default) and the known values ``m * transform(data)``, a call at time
    ``t`` sets the known values of ``u`` to a fresh draw ``transform(mean_t) + std_t z`` of the forward marginal
    ``p_0t(. | data)`` and those of ``u_mean`` to ``transform(mean_t)``, keeping the other values of ``u`` and
    ``u_mean`` as the update left them. ``transform`` must be orthogonal for the draw to have the law of the
    marginal (``M z ~ N(0, I)``).
    """

    def __init__(
        self,
        sde: SDE,
        data: Tensor,
        mask: Tensor,
        generator: torch.Generator | None = None,
        transform: ChannelTransform | None = None,
    ):
        self.sde = sde  # the forward SDE, whose marginal_prob gives the law of the known values at time t
        self.data = data  # (B, ...) data in the original space
        self.mask = mask  # (B, ...) boolean, True where the value (in the transformed space) is known
        self.generator = generator  # source of the noise of the draws
        self.transform = transform  # orthogonal channel map to the space where the mask applies; None: identity

    def _forward(self, x: Tensor) -> Tensor:
        return x if self.transform is None else self.transform.forward(x)

    def _inverse(self, u: Tensor) -> Tensor:
        return u if self.transform is None else self.transform.inverse(u)

    def __call__(self, x: Tensor, x_mean: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        mean, std = self.sde.marginal_prob(self.data, t)
        mean = self._forward(mean)
        noise = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        known = mean + std.reshape(-1, *([1] * (mean.ndim - 1))) * noise
        x = self._inverse(torch.where(self.mask, known, self._forward(x)))
        x_mean = self._inverse(torch.where(self.mask, mean, self._forward(x_mean)))
        return x, x_mean

    def finish(self, x: Tensor) -> Tensor:
        """``x`` with its known values set to the data exactly (in the transformed space)."""
        return self._inverse(torch.where(self.mask, self._forward(self.data), self._forward(x)))


def prepare_data(sde: SDE, data: Tensor, device, generator, predictor: str, corrector: str, snr, n_steps, eps, denoise):
    """Check the shared arguments of :func:`.pc_inpaint` and :func:`.pc_colorize` (before any work) and move ``data``
    to the sampling device."""
    check_sde(sde)
    check_data(data)
    check_pc_options(sde, predictor, corrector, snr, n_steps, eps, denoise)
    return data.to(resolve_device(device, generator, data))


def pc_with_known_values(
    sde: SDE,
    score_fn: ScoreFn,
    data: Tensor,
    mask: Tensor,
    transform: ChannelTransform | None,
    denoise: bool,
    generator: torch.Generator | None,
    pc_options: dict,
) -> tuple[Tensor, int]:
    """PC sampling of ``data.shape`` with :class:`KnownValueReplacement` as the update hook (shared by inpainting
    and colorization); with ``denoise`` the known values of the result are the data exactly."""
    hook = KnownValueReplacement(sde, data, mask, generator, transform)
    x, nfe = pc_sample(
        sde, score_fn, tuple(data.shape), denoise=denoise, generator=generator, device=data.device, dtype=data.dtype,
        update_hook=hook, **pc_options,
    )
    return (hook.finish(x) if denoise else x), nfe


def model_sampler(sampler, sde: SDE, predictor: str, corrector: str, inverse_scaler: Scaler | None, snr: float,
                  n_steps: int, probability_flow: bool, parameterization: Parameterization | str | None, denoise: bool,
                  eps: float):
    """The body of the reference-style ``get_pc_inpainter`` / ``get_pc_colorizer``: the arguments checked now, and
    ``run(model, data, *mask, generator=None, progress=False)`` returning ``inverse_scaler`` of ``sampler``'s samples
    (:func:`.pc_inpaint` or :func:`.pc_colorize`) with the score of ``model`` read through :class:`models.ScoreModel`
    with ``parameterization``, without gradients."""
    check_sde(sde)
    parameterization = resolve_parameterization(sde, parameterization)
    check_pc_options(sde, predictor, corrector, snr, n_steps, eps, denoise)
    scale = inverse_scaler if inverse_scaler is not None else (lambda x: x)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                   probability_flow=probability_flow, denoise=denoise, eps=eps)

    def run(model: torch.nn.Module, data: Tensor, *mask: Tensor, generator=None, progress: bool = False) -> Tensor:
        score_fn = ScoreModel(model, sde, parameterization).score_fn()
        with torch.no_grad():
            x, _ = sampler(sde, score_fn, data, *mask, generator=generator, progress=progress, **options)
        return scale(x)

    return run
