"""Controllable generation with an unconditional score: inpainting, colorization, guidance, latent interpolation.

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021),
section 5 and appendices I.2-I.4.

* :func:`pc_inpaint` / :func:`get_pc_inpainter`: PC sampling in which the known values are replaced, after
  every predictor and corrector update, by a fresh draw of the forward marginal of the data at the time the
  state then represents ([SDE] appendix I.2, the "replacement" method). :func:`pc_colorize` /
  :func:`get_pc_colorizer` is the same procedure in an orthogonally decoupled colour space in which the grey
  level is one channel ([SDE] appendix I.3). Both run :func:`samplers.pc.pc_sample` with an ``update_hook``;
  there is one PC loop.
* :func:`guided_score_fn`: ``score + scale * grad_x log p_t(y | x)`` with a noise-conditional classifier
  ([SDE] eq. (14) and appendix I.1). :func:`cfg_score_fn`: classifier-free guidance (Ho & Salimans, 2022).
  Both return plain ``score_fn(x, t)`` usable with every sampler.
* :func:`interpolate_latents`, :func:`ode_interpolate`: encode with the probability-flow ODE, interpolate the
  latents (spherically, for Gaussian latents), decode ([SDE] section 4.3).

Defects of the 2021 reference's ``controllable_generation.py`` fixed here:

1. Its update sets ``x_mean = x * (1 - mask) + data_mean * mask`` from the *noisy* new ``x``, so with
   ``denoise=True`` the unknown values returned are the last noisy iterate, not its noise-free mean. Here the
   unknown values of ``x_mean`` come from the update's ``x_mean`` and the known ones are the marginal mean.
2. After the predictor step from ``t_i`` it draws the known values at ``t_i``, one step noisier than the state
   (which the next corrector and predictor treat as being at ``t_{i+1}``); it also starts from the clean data
   in the known values. Here they are drawn at the time the state represents (``T`` at the start, ``t_{i+1}``
   after a predictor step, ``0`` after the last), and with ``denoise=True`` they come back exactly equal to the
   data.
3. Its colour transform is a rounded float32 matrix inverted numerically; here it is the exact orthogonal
   matrix (:func:`colour_decoupling_matrix`) and its transpose.

Known limitation of the replacement method (not a defect of the implementation): it feeds the score of
``p_t(x)`` with known values drawn from ``p_t(x_known | data)``, independently of the unknown ones; the
unknown values then follow the reverse SDE of ``p_t(x_unknown | x_known(t))`` rather than of
``p_t(x_unknown | x_known(0) = data)``. Even with the exact score and infinitely many steps the result is not
the exact conditional law when known and unknown values are correlated; on a 2-D Gaussian with correlation
0.8 and ``y = 1.5`` (VP), the predictor-only limit has conditional mean 0.75 (exact: 1.2) and variance 0.494
(exact: 0.36). Langevin corrector steps pull it towards the exact conditional (they mix at every noise level,
where near ``t = 0`` the two conditionals agree): ``tests/test_controllable.py`` states the figures.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch
from torch import Tensor

from sde_lib import SDE, ScoreFn
from base_lib.checks import check_bool

from .common import check_choice, check_eps, check_positive, check_sde, resolve_device
from .ode import DEFAULT_METHOD, ode_encode, ode_sample
from .pc import check_n_steps, get_corrector, get_predictor, pc_sample

Scaler = Callable[[Tensor], Tensor]
LabelScoreFn = Callable[[Tensor, Tensor, "Tensor | int | None"], Tensor]
"""``score_fn(x, t, y)``: a label-conditional score; ``y=None`` asks for the unconditional score."""
INTERPOLATIONS = ("slerp", "linear")


# ---------------------------------------------------------------------------------------------- argument checks
def check_data(data: Tensor, name: str = "data") -> Tensor:
    """``data`` if it is a floating-point tensor of shape ``(B, ...)`` with ``B >= 1``, else ``ValueError``."""
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, ...), got {_describe(data)}")
    return data


def check_mask(mask: Tensor, data: Tensor) -> Tensor:
    """``mask`` (1 = known, 0 = to generate) as a boolean tensor of the shape of ``data``, else ``ValueError``.

    Any shape that broadcasts to ``data.shape`` is accepted (e.g. ``(1, 1, H, W)`` for one mask over a batch of
    images); values must be exactly 0 or 1 (bool, integer or floating point).
    """
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor of 0s and 1s broadcastable to {tuple(data.shape)}, got {_describe(mask)}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, data.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != data.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {tuple(data.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask values must be 0 (to generate) or 1 (known)")
    return mask.to(device=data.device, dtype=torch.bool).expand(data.shape)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------- colour space
def colour_decoupling_matrix(dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The orthogonal ``3 x 3`` matrix ``M`` whose rows are an orthonormal basis with first row ``(1, 1, 1) / sqrt(3)``.

    ``y = M x`` per pixel maps RGB to a space whose first channel ``(r + g + b) / sqrt(3) = sqrt(3) grey`` is the
    grey level (the mean of the channels) and whose other two channels, ``(-2r + g + b) / sqrt(6)`` and
    ``(g - b) / sqrt(2)``, the two colour differences orthogonal to it. These are the (Helmert) vectors of the
    reference's matrix, used there as columns. ``M^{-1} = M^T``. Because ``M`` is orthogonal and the noise of the
    SDEs is isotropic, ``M x(t)`` is the same diffusion started from ``M x(0)``.
    """
    rows = [[1.0, 1.0, 1.0], [-2.0, 1.0, 1.0], [0.0, 1.0, -1.0]]
    matrix = torch.tensor(rows, dtype=torch.float64)
    matrix = matrix / matrix.norm(dim=1, keepdim=True)
    return matrix.to(dtype=dtype, device=device)


class ChannelTransform:
    """The orthogonal map ``x -> M x`` applied to the channels (dimension 1) of ``(B, C, ...)`` tensors, and its inverse."""

    def __init__(self, matrix: Tensor):
        self.matrix = matrix  # (C, C) orthogonal matrix, in the dtype and device of the data

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ij,bj...->bi...", self.matrix, x)

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("ji,bj...->bi...", self.matrix, y)


def decouple_colours(x: Tensor) -> Tensor:
    """RGB images ``(B, 3, ...)`` in the decoupled space of :func:`colour_decoupling_matrix` (channel 0: ``sqrt(3)`` grey)."""
    return ChannelTransform(colour_decoupling_matrix(x.dtype, x.device)).forward(x)


def grey_level_known(data: Tensor) -> tuple[Tensor, ChannelTransform]:
    """Colorization as inpainting: the mask (the first channel known) and the map to the decoupled colour space
    (:func:`colour_decoupling_matrix`, in the dtype and device of ``data``) of RGB images ``(B, 3, ...)``;
    ``ValueError`` for another channel count."""
    if data.shape[1] != 3:
        raise ValueError(f"data must have 3 colour channels, shape (B, 3, ...), got shape {tuple(data.shape)}")
    mask = torch.zeros_like(data, dtype=torch.bool)
    mask[:, 0] = True  # the grey channel (sqrt(3) times the grey level) is known
    return mask, ChannelTransform(colour_decoupling_matrix(data.dtype, data.device))


def couple_colours(y: Tensor) -> Tensor:
    """The inverse of :func:`decouple_colours`."""
    return ChannelTransform(colour_decoupling_matrix(y.dtype, y.device)).inverse(y)


# ---------------------------------------------------------------------------------------------- known-value replacement
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


def _pc_with_known_values(
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


def _prepare(sde: SDE, data: Tensor, device, generator, predictor: str, corrector: str, snr, n_steps, eps, denoise):
    """Check the shared arguments (before any work) and move ``data`` to the sampling device."""
    check_sde(sde)
    check_data(data)
    get_predictor(predictor), get_corrector(corrector)
    check_positive("snr", snr), check_n_steps(n_steps), check_eps(eps, sde), check_bool("denoise", denoise)
    return data.to(resolve_device(device, generator, data))


def pc_inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    data: Tensor,
    mask: Tensor,
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
    """Inpainting by PC sampling with the replacement method, [SDE] appendix I.2, for any SDE.

    ``data`` ``(B, ...)``: the images (unknown values are ignored); ``mask``: 1 where ``data`` is known, 0 where it
    is to be generated, broadcastable to ``data``. After every corrector and predictor update of
    :func:`samplers.pc.pc_sample` (and at the start) the known values of ``x`` become a fresh draw of the forward
    marginal ``mean_t(data) + std_t z`` at the time the state represents and those of ``x_mean`` the marginal mean
    (see the module docstring for the fixes to the reference and for the method's approximation). With
    ``denoise=True`` the result is ``x_mean`` with the known values equal to ``data`` exactly. Other options as in
    :func:`samplers.pc.pc_sample`; samples on the device of ``data`` unless ``device`` is given, in its dtype.

    Returns ``(x, nfe)``.
    """
    data = _prepare(sde, data, device, generator, predictor, corrector, snr, n_steps, eps, denoise)
    mask = check_mask(mask, data)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps, probability_flow=probability_flow,
                   eps=eps, progress=progress)
    return _pc_with_known_values(sde, score_fn, data, mask, None, denoise, generator, options)


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
    :func:`decouple_colours` the first channel is known and the two colour channels are generated, by the same
    replacement as :func:`pc_inpaint`. With ``denoise=True`` the grey level of the result equals that of ``data``
    up to float rounding of the two channel transforms. Options as in :func:`pc_inpaint`.

    Returns ``(x, nfe)``.
    """
    data = _prepare(sde, data, device, generator, predictor, corrector, snr, n_steps, eps, denoise)
    mask, transform = grey_level_known(data)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps, probability_flow=probability_flow,
                   eps=eps, progress=progress)
    return _pc_with_known_values(sde, score_fn, data, mask, transform, denoise, generator, options)


def _model_score_fn(sde: SDE, model: torch.nn.Module, continuous: bool) -> ScoreFn:
    from models import get_sampling_score_fn  # the network package is only needed once a model is sampled

    return get_sampling_score_fn(sde, model, continuous=continuous)


def get_pc_inpainter(
    sde: SDE,
    predictor: str,
    corrector: str,
    inverse_scaler: Scaler | None,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    continuous: bool = False,
    denoise: bool = True,
    eps: float = 1e-5,
):
    """The reference's ``get_pc_inpainter``: ``inpainter(model, data, mask, generator=None, progress=False)`` returning
    ``inverse_scaler`` of the inpainted images (:func:`pc_inpaint`). ``predictor`` and ``corrector`` are registered
    names (``"reverse_diffusion"``, ``"langevin"``, ...); ``continuous`` selects the network's time labels as in
    :func:`models.get_score_fn`. Arguments are checked here, before any sampling."""
    return _model_sampler(pc_inpaint, sde, predictor, corrector, inverse_scaler, snr, n_steps, probability_flow,
                          continuous, denoise, eps, with_mask=True)


def get_pc_colorizer(
    sde: SDE,
    predictor: str,
    corrector: str,
    inverse_scaler: Scaler | None,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    continuous: bool = False,
    denoise: bool = True,
    eps: float = 1e-5,
):
    """The reference's ``get_pc_colorizer``: ``colorizer(model, gray_scale_img, generator=None, progress=False)``
    returning ``inverse_scaler`` of the colorized images (:func:`pc_colorize`); arguments as :func:`get_pc_inpainter`."""
    return _model_sampler(pc_colorize, sde, predictor, corrector, inverse_scaler, snr, n_steps, probability_flow,
                          continuous, denoise, eps, with_mask=False)


def _model_sampler(sampler, sde, predictor, corrector, inverse_scaler, snr, n_steps, probability_flow, continuous,
                   denoise, eps, with_mask: bool):
    check_sde(sde)
    get_predictor(predictor), get_corrector(corrector)
    check_positive("snr", snr), check_n_steps(n_steps), check_eps(eps, sde), check_bool("denoise", denoise)
    scale = inverse_scaler if inverse_scaler is not None else (lambda x: x)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                   probability_flow=probability_flow, denoise=denoise, eps=eps)

    def run(model: torch.nn.Module, data: Tensor, *mask: Tensor, generator=None, progress: bool = False) -> Tensor:
        score_fn = _model_score_fn(sde, model, continuous)
        with torch.no_grad():
            x, _ = sampler(sde, score_fn, data, *mask, generator=generator, progress=progress, **options)
        return scale(x)

    if with_mask:
        def inpainter(model: torch.nn.Module, data: Tensor, mask: Tensor, generator=None, progress: bool = False):
            return run(model, data, mask, generator=generator, progress=progress)

        return inpainter

    def colorizer(model: torch.nn.Module, gray_scale_img: Tensor, generator=None, progress: bool = False):
        return run(model, gray_scale_img, generator=generator, progress=progress)

    return colorizer


# ---------------------------------------------------------------------------------------------- guidance
def _check_scale(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _check_callable(name: str, fn, signature: str):
    if not callable(fn):
        raise ValueError(f"{name} must be callable as {signature}, got {type(fn).__name__}")
    return fn


def _label_batch(y: int | Tensor, batch: int, num_classes: int, device: torch.device) -> Tensor:
    """``y`` as ``(batch,)`` int64 labels in ``[0, num_classes)``, else ``ValueError``."""
    labels = torch.as_tensor(y, device=device)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim > 1:
        raise ValueError(f"y must be an integer label or a (B,) integer tensor of labels, got {y!r}")
    labels = labels.expand(batch) if labels.ndim == 0 else labels
    if labels.shape != (batch,) or (labels < 0).any() or (labels >= num_classes).any():
        raise ValueError(f"y must hold {batch} labels in [0, {num_classes}), got shape {tuple(labels.shape)}")
    return labels.long()


def classifier_log_prob_grad(log_prob_classifier_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor,
                             y: int | Tensor) -> Tensor:
    """``grad_x log p_t(y | x)`` by autograd, where ``log_prob_classifier_fn(x, t) -> (B, K)`` gives logits or log-probabilities.

    ``log_softmax`` is applied to the output (a no-op on log-probabilities). Gradients are enabled locally, so it
    works under ``torch.no_grad()``; when the caller differentiates with respect to ``x`` (``x.requires_grad``
    with grad mode on, e.g. an exact likelihood) the graph is kept.
    """
    keep_graph = torch.is_grad_enabled() and x.requires_grad
    with torch.enable_grad():
        x_in = x if keep_graph else x.detach().requires_grad_(True)
        logits = log_prob_classifier_fn(x_in, t)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"log_prob_classifier_fn must return (B, num_classes) = ({x.shape[0]}, K), got {tuple(logits.shape)}")
        labels = _label_batch(y, x.shape[0], logits.shape[1], logits.device)
        selected = torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, x_in, create_graph=keep_graph)
    return grad


def guided_score_fn(
    score_fn: ScoreFn,
    log_prob_classifier_fn: Callable[[Tensor, Tensor], Tensor],
    y: int | Tensor,
    scale: float = 1.0,
) -> ScoreFn:
    """Classifier guidance, [SDE] eq. (14): ``score(x, t) + scale * grad_x log p_t(y | x)``.

    ``log_prob_classifier_fn(x, t) -> (B, K)``: logits (or log-probabilities) of a noise-conditional classifier of
    ``x(t)``, trained on the same SDE perturbations (the JAX reference's ``config.sampling.classifier``); ``y``: one
    label or ``(B,)`` labels. ``scale = 1`` is Bayes' rule, ``grad log p_t(x | y)`` exactly when score and classifier
    are exact; ``scale > 1`` targets ``p_t(x) p_t(y | x)^scale``, sharper classes (Dhariwal & Nichol, 2021). The
    result is an ordinary ``score_fn(x, t)`` for any sampler; each call costs one score and one classifier
    gradient evaluation.
    """
    _check_callable("score_fn", score_fn, "score_fn(x, t)")
    _check_callable("log_prob_classifier_fn", log_prob_classifier_fn, "log_prob_classifier_fn(x, t) -> (B, K)")
    scale = _check_scale("scale", scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        return score_fn(x, t) + scale * classifier_log_prob_grad(log_prob_classifier_fn, x, t, y)

    return guided


def cfg_score_fn(
    cond_score_fn: LabelScoreFn,
    uncond_score_fn: ScoreFn | None,
    y: int | Tensor,
    guidance_scale: float,
) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans, 2022, eq. (6) in score form): ``(1 + w) s(x, t, y) - w s(x, t)``.

    ``cond_score_fn(x, t, y)``: a label-conditional score; ``uncond_score_fn(x, t)``: the unconditional one, or
    ``None`` to use ``cond_score_fn(x, t, None)`` (one network trained with label dropout, ``None`` standing for the
    null label). ``w = guidance_scale``: ``0`` gives the conditional score exactly, ``-1`` the unconditional one.
    In the other common convention, ``s_u + g (s_c - s_u)``, ``g = 1 + w``. With exact scores,
    ``(1 + w) grad log p_t(x | y) - w grad log p_t(x) = grad log p_t(x) + (1 + w) grad log p_t(y | x)``: classifier
    guidance with ``scale = 1 + w``, sampling ``p_t(x | y) p_t(y | x)^w`` (classes sharpened for ``w > 0``). Each
    call makes two score evaluations (counted as one by the samplers' ``nfe``).
    """
    _check_callable("cond_score_fn", cond_score_fn, "cond_score_fn(x, t, y)")
    if uncond_score_fn is not None:
        _check_callable("uncond_score_fn", uncond_score_fn, "uncond_score_fn(x, t) or None")
    w = _check_scale("guidance_scale", guidance_scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        conditional = cond_score_fn(x, t, y)
        unconditional = uncond_score_fn(x, t) if uncond_score_fn is not None else cond_score_fn(x, t, None)
        return conditional + w * (conditional - unconditional)

    return guided


# ---------------------------------------------------------------------------------------------- latent space
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
        raise ValueError(f"z0 and z1 must be floating-point tensors of shape (B, ...), got {_describe(z0)} and {_describe(z1)}")
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
        raise ValueError(f"x1 must be a tensor of the shape of x0 {tuple(x0.shape)}, got {_describe(x1)}")
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    _check_alphas(alphas, x0)
    z, nfe_encode = ode_encode(sde, score_fn, torch.cat([x0, x1.to(x0)]), method=method, rtol=rtol, atol=atol, eps=eps,
                               progress=progress)
    latents = interpolate_latents(z[: x0.shape[0]], z[x0.shape[0]:], alphas, interpolation)
    x, nfe_decode = ode_sample(sde, score_fn, latents.flatten(0, 1).shape, method=method, rtol=rtol, atol=atol, eps=eps,
                               z=latents.flatten(0, 1), progress=progress)
    return x.reshape(latents.shape), nfe_encode + nfe_decode
