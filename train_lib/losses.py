"""Training objectives of score-based models.

* :func:`get_sde_loss_fn`: continuous-time denoising score matching, [SDE] eq. (7) (Song et al., ICLR 2021),
  ``E_t E_x0 E_z [lambda(t) ||s_theta(x(t), t) + z / sigma(t)||^2]`` with ``x(t) = mean(x0, t) + sigma(t) z``,
  ``t ~ U(eps, T)`` and ``lambda = sigma^2`` (the paper's choice) or ``g^2`` (likelihood weighting, Song, Durkan,
  Murray & Ermon 2021, [MLE]), optionally with the importance-sampled ``t`` of
  :class:`train_lib.time_sampling.LikelihoodTimeSampler`.
* :func:`get_edm_loss_fn`: EDM's loss (Karras et al. 2022) of the ``edm`` parameterization, log-normal noise levels.
* :func:`get_smld_loss_fn` and :func:`get_ddpm_loss_fn`: the discrete losses of NCSN (Song & Ermon 2019, eq. (5))
  and DDPM (Ho et al. 2020, eq. (14)) over step indices, as the 2021 reference trains them.

The one-step training / evaluation functions built on these losses are in :mod:`train_lib.steps`.

A signal-conditioned network (:mod:`models.conditioning`, e.g. SR3's) is given ``c = condition_map(x0)`` of its own
batch (:func:`condition_signal`), so a step function trains it on plain batches of data.

Conventions are the reference's: the per-sample loss is the mean over data dimensions (``reduce_mean=True``)
or half their sum (``reduce_mean=False``), then the batch mean is taken. Every loss function is called as
``loss_fn(model, batch, generator=None, per_example=False)``: all random draws (times, step indices, noise)
use ``generator``, so a seed fixes the loss; ``per_example=True`` returns the ``(B,)`` per-sample losses.
"""

from __future__ import annotations

import math

from typing import Any, Callable

import torch
from torch import Tensor, nn

from models.conditioning import condition_map_of
from models.score_model import Parameterization, ScoreModel, check_model_output, resolve_parameterization
from samplers.common import check_eps
from sde_lib import SDE, VESDE, VPSDE, batch_broadcast
from base_lib.checks import check_bool

from .time_sampling import LikelihoodTimeSampler

LossFn = Callable[..., Tensor]
"""``loss_fn(model, batch, generator=None, per_example=False)``: the scalar batch loss, or ``(B,)`` losses."""



# ---------------------------------------------------------------------------- shared pieces


def _reduce_op(reduce_mean: bool) -> Callable[[Tensor], Tensor]:
    """Per-sample reduction over data dimensions: the mean, or half the sum (the reference's choice), ``(B, ...) -> (B,)``."""
    if reduce_mean:
        return lambda losses: losses.flatten(1).mean(dim=1)
    return lambda losses: 0.5 * losses.flatten(1).sum(dim=1)


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Tensor) or batch.ndim < 2 or not batch.is_floating_point() or batch.shape[0] < 1:
        got = f"{tuple(batch.shape)} {batch.dtype}" if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"batch must be a floating-point tensor of shape (B, ...) with B >= 1, got {got}")


def condition_signal(model: nn.Module, x0: Tensor, y: Tensor | None = None) -> Tensor | None:
    """What a loss binds as the network's third argument: ``y`` when given (class labels, or a signal), else for a
    signal-conditioned network the signal ``condition_map(x0)`` of the clean batch (SR3 trains on pairs of an image
    and its own low-resolution version), else ``None``."""
    condition_map = condition_map_of(model)
    if y is None and condition_map is not None:
        return condition_map(x0)
    return y


def _network_output(model: nn.Module, train: bool, x: Tensor, labels: Tensor, x0: Tensor) -> Tensor:
    """``model(x, labels[, c])`` in train or eval mode (``c``: the signal of ``x0`` for a signal-conditioned network),
    checked to be shaped like ``x`` and cast to its dtype (autocast)."""
    model.train(train)
    signal = condition_signal(model, x0)
    return check_model_output(model(x, labels, *(() if signal is None else (signal,))), x).to(x.dtype)


def _finish(losses: Tensor, per_example: bool) -> Tensor:
    return losses if per_example else losses.mean()


# ---------------------------------------------------------------------------- continuous time


def uniform_times(sde: SDE, x0: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """``t ~ U(eps, T)``, one time per row of ``x0``, in its dtype and on its device; in range by construction, so
    the SDE's range check (a host sync on a GPU) is not repeated for it."""
    if not 0.0 <= eps < sde.T:
        raise ValueError(f"eps must lie in [0, T) = [0, {sde.T}), got {eps}")
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    return sde.mark_times_checked(u * (sde.T - eps) + eps)


def add_noise(mean: Tensor, std: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean + std z, z, std)`` with ``z ~ N(0, I)`` shaped like ``mean``, drawn from ``generator``, and the per-sample
    ``std`` ``(B,)`` broadcast like ``mean``: the Gaussian perturbation every loss draws."""
    z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    std = batch_broadcast(std, mean)
    return mean + std * z, z, std


def perturb_data(
    sde: SDE, x0: Tensor, t: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x(t), z, std)``: ``x(t) = mean(x0, t) + std(t) z`` (:func:`add_noise`), the perturbation of [SDE] eq. (7)
    shared by the score and classifier losses."""
    mean, std = sde.marginal_prob(x0, t)
    return add_noise(mean, std, generator)


def get_sde_loss_fn(
    sde: SDE,
    train: bool,
    reduce_mean: bool = True,
    parameterization: Parameterization | str | None = None,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
    eps: float = 1e-5,
) -> LossFn:
    """Denoising score matching in continuous time, [SDE] eq. (7), with the reference's conventions.

    Per sample: ``t ~ U(eps, T)``, ``z ~ N(0, I)``, ``x(t) = mean(x0, t) + sigma(t) z`` and, with
    ``s = ScoreModel(model, sde, parameterization).score(x(t), t)`` (``None``: the SDE's continuous-time
    parameterization of the reference, :func:`models.default_parameterization`),

    * ``reduce(||sigma s + z||^2)``: the weighting ``lambda = sigma^2`` of [SDE];
    * ``likelihood_weighting``: ``g(t)^2 reduce(||s + z / sigma||^2)``, the weighting ``lambda = g^2`` of [MLE]
      under which the loss bounds the negative log-likelihood (up to a constant);
    * ``importance_weighting`` (needs ``likelihood_weighting``): ``t`` drawn from the density proportional to
      ``g^2 / sigma^2`` on ``[eps, T]`` and the loss ``(Z / (T - eps)) reduce(||sigma s + z||^2)``, which has the
      same expectation as the likelihood-weighted loss and a lower variance.

    ``train`` puts the model in training mode; ``y`` (a keyword of ``loss_fn``) are the class labels of a
    label-conditional network (``None``: its null label), or the signal of a signal-conditioned one (``None``:
    :func:`condition_signal` of the batch). Raises ``ValueError`` on bad arguments.
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
    for name, flag in (
        ("train", train),
        ("reduce_mean", reduce_mean),
        ("likelihood_weighting", likelihood_weighting),
        ("importance_weighting", importance_weighting),
    ):
        check_bool(name, flag)
    eps = check_eps(eps, sde)
    parameterization = resolve_parameterization(sde, parameterization)
    if importance_weighting and not likelihood_weighting:
        raise ValueError(
            "importance_weighting samples t for the likelihood-weighted loss: it needs likelihood_weighting=True"
        )
    time_sampler = LikelihoodTimeSampler(sde, eps) if importance_weighting else None
    reduce = _reduce_op(reduce_mean)

    def sample_times(batch: Tensor, generator: torch.Generator | None) -> Tensor:
        if time_sampler is not None:
            u = torch.rand(batch.shape[0], generator=generator, device=batch.device, dtype=batch.dtype)
            return sde.mark_times_checked(time_sampler.icdf(u).to(batch.dtype))  # clamped to [eps, T]
        return uniform_times(sde, batch, eps, generator)

    def loss_fn(
        model: nn.Module,
        batch: Tensor,
        generator: torch.Generator | None = None,
        per_example: bool = False,
        y: Tensor | None = None,
    ) -> Tensor:
        _check_batch(batch)
        t = sample_times(batch, generator)
        perturbed, z, std = perturb_data(sde, batch, t, generator)
        score = ScoreModel(model, sde, parameterization).score(
            perturbed, t, condition_signal(model, batch, y), train=train
        ).to(batch.dtype)
        if time_sampler is not None:
            losses = time_sampler.uniform_weight * reduce(torch.square(score * std + z))
        elif likelihood_weighting:
            g2 = sde.sde(torch.zeros_like(batch), t)[1].square()
            losses = reduce(torch.square(score + z / std)) * g2
        else:
            losses = reduce(torch.square(score * std + z))
        return _finish(losses, per_example)

    return loss_fn


# ---------------------------------------------------------------------------- EDM


def get_edm_loss_fn(
    sde: SDE,
    train: bool,
    reduce_mean: bool = True,
    parameterization: Parameterization | str | None = "edm",
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> LossFn:
    """EDM's training loss (Karras et al. 2022, eq. (8) with Table 1's choices) for the ``edm`` parameterization.

    Per sample: ``ln sigma ~ N(p_mean, p_std^2)``, ``n ~ N(0, I)`` and
    ``lambda(sigma) reduce(||D(x0 + sigma n; sigma) - x0||^2)`` with ``lambda = (sigma^2 + sigma_data^2) /
    (sigma sigma_data)^2``, ``D`` the preconditioned denoiser of :class:`models.score_model.EDMPreconditioning`.
    The loss lives in the scaled variable ``x / alpha``, where every linear SDE is ``x(0) + sigma z`` (drawn by
    :func:`add_noise`, as :func:`perturb_data` draws the SDE's), so it needs no time: the same network serves any
    SDE through the score model. ``reduce_mean=False`` gives half EDM's sum.
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
    check_bool("train", train)
    reduce = _reduce_op(check_bool("reduce_mean", reduce_mean))
    parameterization = resolve_parameterization(sde, parameterization)
    if parameterization.objective != "edm":
        raise ValueError(f"the EDM loss trains the 'edm' parameterization, got {parameterization.name!r}")
    p_mean, p_std = float(p_mean), float(p_std)
    if not (math.isfinite(p_mean) and math.isfinite(p_std) and p_std > 0):
        raise ValueError(f"p_mean must be finite and p_std finite and > 0, got p_mean={p_mean}, p_std={p_std}")
    sigma_data = parameterization.sigma_data

    def loss_fn(
        model: nn.Module,
        batch: Tensor,
        generator: torch.Generator | None = None,
        per_example: bool = False,
        y: Tensor | None = None,
    ) -> Tensor:
        _check_batch(batch)
        normal = torch.randn(batch.shape[0], generator=generator, device=batch.device, dtype=batch.dtype)
        sigma = torch.exp(p_mean + p_std * normal)
        perturbed, _, _ = add_noise(batch, sigma, generator)  # x0 + sigma n: the scaled marginal of every linear SDE
        score_model = ScoreModel(model, sde, parameterization)  # the labels the network takes
        network = score_model.network_fn(condition_signal(model, batch, y), train)
        denoised = score_model.parameterization.denoise(network, perturbed, sigma)
        weight = (sigma.square() + sigma_data**2) / (sigma * sigma_data).square()
        return _finish(weight * reduce(torch.square(denoised.to(batch.dtype) - batch)), per_example)

    return loss_fn


# ---------------------------------------------------------------------------- discrete steps


def get_smld_loss_fn(vesde: VESDE, train: bool, reduce_mean: bool = False) -> LossFn:
    """NCSN's loss over noise levels (Song & Ermon 2019, eq. (5)), as the 2021 reference trains SMLD models.

    ``i ~ U{0..N-1}`` is the network's label, with index 0 the largest scale ``sigma_max`` (the reference's
    descending order); ``x~ = x0 + sigma_i z`` and the loss is ``sigma_i^2 reduce(||s(x~, i) + (x~ - x0) /
    sigma_i^2||^2)``: the network outputs the score.
    """
    if not isinstance(vesde, VESDE):
        raise ValueError(f"SMLD training needs a VESDE (DDPM training a VPSDE), got {type(vesde).__name__}")
    check_bool("train", train)
    reduce = _reduce_op(check_bool("reduce_mean", reduce_mean))

    def loss_fn(
        model: nn.Module, batch: Tensor, generator: torch.Generator | None = None, per_example: bool = False
    ) -> Tensor:
        _check_batch(batch)
        labels = torch.randint(0, vesde.N, (batch.shape[0],), generator=generator, device=batch.device)
        sigmas = vesde._table("discrete_sigmas", batch)[vesde.N - 1 - labels]  # ascending table, read backwards
        noise = batch_broadcast(sigmas, batch) * torch.randn(
            batch.shape, generator=generator, device=batch.device, dtype=batch.dtype
        )
        score = _network_output(model, train, batch + noise, labels, batch)
        target = -noise / batch_broadcast(sigmas.square(), batch)
        losses = reduce(torch.square(score - target)) * sigmas.square()
        return _finish(losses, per_example)

    return loss_fn


def get_ddpm_loss_fn(vpsde: VPSDE, train: bool, reduce_mean: bool = True) -> LossFn:
    """DDPM's simplified loss (Ho et al. 2020, eq. (14)), as the 2021 reference trains DDPM models.

    ``i ~ U{0..N-1}`` is the network's label; ``x_i = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) z`` and the
    loss is ``reduce(||eps_theta(x_i, i) - z||^2)``: the network predicts the noise.
    """
    if not isinstance(vpsde, VPSDE):
        raise ValueError(f"DDPM training needs a VPSDE (SMLD training a VESDE), got {type(vpsde).__name__}")
    check_bool("train", train)
    reduce = _reduce_op(check_bool("reduce_mean", reduce_mean))

    def loss_fn(
        model: nn.Module, batch: Tensor, generator: torch.Generator | None = None, per_example: bool = False
    ) -> Tensor:
        _check_batch(batch)
        labels = torch.randint(0, vpsde.N, (batch.shape[0],), generator=generator, device=batch.device)
        noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
        mean_coeff = batch_broadcast(vpsde._table("sqrt_alphas_cumprod", batch)[labels], batch)
        std = batch_broadcast(vpsde._table("sqrt_1m_alphas_cumprod", batch)[labels], batch)
        predicted_noise = _network_output(model, train, mean_coeff * batch + std * noise, labels, batch)
        losses = reduce(torch.square(predicted_noise - noise))
        return _finish(losses, per_example)

    return loss_fn


def get_loss_fn(
    sde: SDE,
    train: bool,
    reduce_mean: bool = False,
    parameterization: Parameterization | str | None = None,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
    eps: float = 1e-5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> LossFn:
    """The loss a network of ``parameterization`` is trained with (its ``objective``), as the reference's
    ``get_step_fn``: denoising score matching for the continuous-time ones (``None``: the SDE's default), the SMLD
    loss for ``smld``, the DDPM loss for ``ddpm`` and EDM's (``p_mean``, ``p_std``) for ``edm``."""
    parameterization = resolve_parameterization(sde, parameterization)
    if parameterization.objective == "dsm":
        return get_sde_loss_fn(
            sde, train, reduce_mean=reduce_mean, parameterization=parameterization,
            likelihood_weighting=likelihood_weighting, importance_weighting=importance_weighting, eps=eps,
        )
    if likelihood_weighting or importance_weighting:
        raise ValueError(
            f"likelihood_weighting and importance_weighting apply to continuous-time training only; the "
            f"{parameterization.name!r} network's loss has fixed weights (turn them off)"
        )
    if parameterization.objective == "edm":
        return get_edm_loss_fn(sde, train, reduce_mean, parameterization, p_mean, p_std)
    build = _DISCRETE_LOSSES.get(parameterization.objective)
    if build is None:
        raise ValueError(f"no loss for the objective {parameterization.objective!r} of the {parameterization.name!r} parameterization")
    return build(sde, train, reduce_mean=reduce_mean)


_DISCRETE_LOSSES = {"smld": get_smld_loss_fn, "ddpm": get_ddpm_loss_fn}
