"""Predictor-corrector (PC) sampling, [SDE] section 4.2 and Algorithms 2-5.

Notation as in :mod:`sde_lib`: [SDE] is Song et al., "Score-Based Generative Modeling through Stochastic
Differential Equations" (ICLR 2021). A PC sampler walks the time grid ``linspace(T, eps, N)`` and at each
time first runs the *corrector* (score-based MCMC targeting ``p_t``: Langevin dynamics) and then the
*predictor* (one step of a solver of the reverse-time SDE from ``t`` to ``t - T/N``), as the 2021
reference does. Predictors and correctors live in registries (:func:`register_predictor`,
:func:`register_corrector`) under the reference's names, so configs written for it keep working.

Defects of the 2021 reference fixed here (each is also stated where it is fixed):

1. Its Langevin corrector sets one step size from the gradient and noise norms *averaged over the batch*,
   so a sample's trajectory depends on the other samples it is batched with (and on the batch size).
   ``"langevin"`` keeps that rule (:class:`LangevinCorrector`), so reference configs reproduce the
   reference's numbers. A step computed from each sample's *own* norms is no fix: unadjusted Langevin
   dynamics with a state-dependent step ``eps(x)`` leaves ``p_t(x) / eps(x)`` invariant, not ``p_t``
   (:class:`AnnealedLangevinDynamics` gives the derivation and the figures). The corrector whose samples do
   not depend on their batch is ``"ald"``, whose step depends on ``t`` alone.
2. Its Langevin and annealed-Langevin correctors read ``sde.alphas``, which its ``subVPSDE`` lacks, so
   they crash for sub-VP. Here sub-VP uses ``alpha_i = 1 - beta_i`` of its own beta schedule
   (:func:`langevin_alpha`).
3. Its ancestral-sampling predictor exists only for VP and VE. Here any :class:`sde_lib.LinearSDE`
   (sub-VP included) gets the Gaussian-posterior step (:func:`linear_sde_ancestral_coeffs`); VP and VE keep
   the reference's DDPM and SMLD formulas, so reference models sample identically.
4. With predictor ``'none'`` and ``denoise=True`` it returns the noisy corrector iterate; here it returns
   the corrector's noise-free mean, the mean of the last update actually made.
5. ``n_steps=0`` crashes there (``x_mean`` unbound); here it is a no-op corrector. Its Euler--Maruyama
   step is ``1/N`` whatever ``T``; here it is ``T/N`` (identical for ``T = 1``). Its returned NFE is
   ``N (n_steps + 1)`` whatever is run; here it is the number of score evaluations made.

Known bias kept for compatibility: the VP and VE steps read the DDPM/SMLD tables at index
``i = floor(t (N - 1) / T)`` while the grid is ``linspace(T, eps, N)``, so the score is evaluated up to ``eps``
later than the time of the table entry it is combined with. For ``N <= 1 / eps`` this error does not shrink
with ``N``: on 1-D Gaussian data of variance 0.09 the exact variance of the VP reverse-diffusion chain is
1.49%, 1.39%, 1.35% too large at N = 250, 500, 1000 (0.18%, 0.08%, 0.04% with the score taken at the
table time ``i T / (N - 1)``). The within-mode variance errors measured with exact scores are in
``tests/test_pc_sampler.py``.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import Callable, Generic, TypeVar

import torch
from torch import Tensor

from sde_lib import SDE, VESDE, VPSDE, LinearSDE, ScoreFn, batch_broadcast, subVPSDE, time_batch

from .common import (
    CountingScoreFn,
    check_eps,
    check_positive,
    check_sde,
    check_shape,
    initial_state,
    progress_bar,
    resolve_device,
    resolve_dtype,
)


def standard_normal_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A draw of ``N(0, I)`` shaped like ``x`` (same dtype and device) from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------- base classes
class Predictor(abc.ABC):
    """One step of a numerical solver of the reverse-time SDE [SDE] eq. (6) (or the probability-flow ODE,
    eq. (13)), from time ``t`` to ``t - T/N``.

    Subclasses implement :meth:`update_fn`. Register one with :func:`register_predictor` to make it
    available to :func:`pc_sample` by name. Draw all noise with :meth:`noise` so that the sampler's
    generator makes runs reproducible.
    """

    #: True for a predictor that does nothing; :func:`pc_sample` then skips it
    identity: bool = False

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        probability_flow: bool = False,
        generator: torch.Generator | None = None,
    ):
        self.sde = sde  # the forward SDE
        self.score_fn = score_fn  # score_fn(x, t) approximating grad_x log p_t(x)
        self.probability_flow = bool(probability_flow)  # True: step the probability-flow ODE, eq. (13)
        self.generator = generator  # source of all the noise drawn by the step
        self.rsde = sde.reverse(score_fn, probability_flow=self.probability_flow)

    @abc.abstractmethod
    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One step from ``x`` at times ``t`` (``(B,)``): returns the new state and its noise-free mean."""

    def noise(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x`` from the sampler's generator."""
        return standard_normal_like(x, self.generator)


class Corrector(abc.ABC):
    """Score-based MCMC steps that leave ``p_t`` (approximately) invariant, run at a fixed time ``t``.

    ``snr`` sets the step size and ``n_steps`` the number of MCMC steps per call. Subclasses implement
    :meth:`update_fn`; register one with :func:`register_corrector`.
    """

    #: True for a corrector that does nothing; :func:`pc_sample` then skips it
    identity: bool = False

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        snr: float,
        n_steps: int,
        generator: torch.Generator | None = None,
    ):
        self.sde = sde  # the forward SDE
        self.score_fn = score_fn  # score_fn(x, t) approximating grad_x log p_t(x)
        self.snr = snr  # target signal-to-noise ratio r of the step size
        self.n_steps = n_steps  # MCMC steps per call
        self.generator = generator  # source of all the noise drawn by the steps

    @abc.abstractmethod
    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Run the MCMC steps from ``x`` at times ``t`` (``(B,)``): returns the new state and its noise-free mean."""

    def noise(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x`` from the sampler's generator."""
        return standard_normal_like(x, self.generator)


# ---------------------------------------------------------------------------------------------- registries
C = TypeVar("C", bound=type)


class _Registry(Generic[C]):
    """Classes of one kind (predictors or correctors) by name."""

    def __init__(self, kind: str, base: type):
        self.kind = kind  # "predictor" or "corrector", for messages
        self.base = base  # the abstract class every entry must subclass
        self.classes: dict[str, type] = {}

    def register(self, cls: C | None, name: str | None) -> C | Callable[[C], C]:
        def decorator(cls: C) -> C:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ValueError(f"register_{self.kind} must decorate a subclass of {self.base.__name__}, got {cls!r}")
            key = cls.__name__ if name is None else name
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.kind} name must be a non-empty string, got {key!r}")
            if key in self.classes and self.classes[key] is not cls:
                raise ValueError(f"a {self.kind} is already registered as {key!r}: {self.classes[key].__name__}")
            self.classes[key] = cls
            return cls

        return decorator if cls is None else decorator(cls)

    def get(self, name: str) -> type:
        if not isinstance(name, str) or name not in self.classes:
            raise ValueError(f"{self.kind} must be one of {', '.join(map(repr, self.names()))}; got {name!r}")
        return self.classes[name]

    def names(self) -> list[str]:
        return sorted(self.classes)


_PREDICTORS: _Registry[type[Predictor]] = _Registry("predictor", Predictor)
_CORRECTORS: _Registry[type[Corrector]] = _Registry("corrector", Corrector)


def register_predictor(cls: type[Predictor] | None = None, *, name: str | None = None):
    """Class decorator making a :class:`Predictor` subclass available to :func:`pc_sample` as ``predictor=name``.

    Use as ``@register_predictor(name="my_predictor")`` (or bare, registering under the class name).
    Registering a different class under a taken name raises ``ValueError``.
    """
    return _PREDICTORS.register(cls, name)


def register_corrector(cls: type[Corrector] | None = None, *, name: str | None = None):
    """Class decorator making a :class:`Corrector` subclass available to :func:`pc_sample` as ``corrector=name``."""
    return _CORRECTORS.register(cls, name)


def get_predictor(name: str) -> type[Predictor]:
    """The predictor class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    return _PREDICTORS.get(name)


def get_corrector(name: str) -> type[Corrector]:
    """The corrector class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    return _CORRECTORS.get(name)


def available_predictors() -> list[str]:
    """The registered predictor names, sorted."""
    return _PREDICTORS.names()


def available_correctors() -> list[str]:
    """The registered corrector names, sorted."""
    return _CORRECTORS.names()


# ---------------------------------------------------------------------------------------------- predictors
@register_predictor(name="euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """Euler--Maruyama step of the reverse SDE [SDE] eq. (6) with ``dt = T/N``:
    ``x_mean = x - f_rev(x, t) dt``, ``x = x_mean + g(t) sqrt(dt) z`` (no noise for the ODE, eq. (13)).

    The reference uses ``dt = 1/N`` whatever ``T``; the two agree for ``T = 1``.
    """

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dt = self.sde.T / self.sde.N
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x - drift * dt
        if self.probability_flow:
            return x_mean, x_mean
        return x_mean + batch_broadcast(diffusion * math.sqrt(dt), x) * self.noise(x), x_mean


@register_predictor(name="reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Reverse-diffusion step [SDE] eq. (46): ``x_mean = x - (f_i - G_i^2 s)``, ``x = x_mean + G_i z``.

    ``f_i, G_i`` is the SDE's own discretization (DDPM for VP, SMLD for VE, Euler--Maruyama otherwise);
    for the probability-flow ODE the score term is halved and no noise is added.
    """

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        if self.probability_flow:
            return x_mean, x_mean
        return x_mean + batch_broadcast(G, x) * self.noise(x), x_mean


def linear_sde_ancestral_coeffs(sde: LinearSDE, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients ``(a, tau2, std)`` of the Gaussian-posterior step from time ``t`` to ``s < t`` of a linear SDE.

    With kernel ``x(t) | x(0) ~ N(alpha_t x0, sigma_t^2 I)`` the transition is
    ``x(t) | x(s) ~ N(a x(s), tau2 I)`` with ``a = alpha_t / alpha_s`` and ``tau2 = sigma_t^2 - a^2 sigma_s^2``.
    The posterior ``q(x_s | x_t, x0)`` evaluated at Tweedie's estimate ``x0_hat = (x_t + sigma_t^2 s) / alpha_t``
    has mean ``(x_t + tau2 s) / a`` and variance ``sigma_s^2 tau2 / sigma_t^2``, returned as ``std``.
    For VE this is exactly the SMLD ancestral step [SDE] eq. (47); for VP with the DDPM tables its mean is
    Ho et al. (2020) eq. (11) and its variance the posterior ``beta~`` (the reference VP step uses ``beta``).
    """
    alpha_t, sigma_t = sde.marginal_coeffs(t)
    alpha_s, sigma_s = sde.marginal_coeffs(s)
    a = alpha_t / alpha_s
    tau2 = (sigma_t.square() - (a * sigma_s).square()).clamp(min=0.0)
    return a, tau2, sigma_s * tau2.sqrt() / sigma_t


@register_predictor(name="ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling: one step of the discrete reverse Markov chain, ``x_mean = (x + tau2 s) / a``,
    ``x = x_mean + std z``.

    * VP: DDPM, Ho et al. (2020) eq. (11), with ``a = sqrt(1 - beta_i)``, ``tau2 = std^2 = beta_i``, as the reference.
    * VE (``exact_marginal=False``): SMLD, [SDE] eq. (47), ``a = 1``, ``tau2 = sigma_i^2 - sigma_{i-1}^2``,
      ``std^2 = sigma_{i-1}^2 tau2 / sigma_i^2``, as the reference.
    * any other :class:`sde_lib.LinearSDE` (sub-VP, exact-marginal VE, user SDEs; the reference supports
      none of these): the Gaussian posterior ``q(x_s | x_t, x0_hat)`` from ``t`` to ``s = max(t - T/N, 0)``,
      see :func:`linear_sde_ancestral_coeffs`.

    Index ``i = floor(t (N - 1) / T)`` as in the reference. Not defined for the probability-flow ODE.
    """

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        probability_flow: bool = False,
        generator: torch.Generator | None = None,
    ):
        if probability_flow:
            raise ValueError("predictor='ancestral_sampling' samples the reverse SDE; it needs probability_flow=False")
        if not isinstance(sde, LinearSDE):
            raise ValueError(
                f"predictor='ancestral_sampling' needs a LinearSDE (Gaussian kernel), got {type(sde).__name__}"
            )
        super().__init__(sde, score_fn, probability_flow, generator)

    def coefficients(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, tau2, std)``, each ``(B,)``, of the step at times ``t``."""
        sde = self.sde
        if isinstance(sde, VPSDE):
            beta = sde._table("discrete_betas", x)[sde._timestep(t)]
            return torch.sqrt(1.0 - beta), beta, beta.sqrt()
        if isinstance(sde, VESDE) and not sde.exact_marginal:
            i = sde._timestep(t)
            sigmas = sde._table("discrete_sigmas", x)
            sigma = sigmas[i]
            adjacent = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
            tau2 = sigma.square() - adjacent.square()
            return torch.ones_like(sigma), tau2, torch.sqrt(adjacent.square() * tau2 / sigma.square())
        s = (t - sde.T / sde.N).clamp(min=0.0)
        return linear_sde_ancestral_coeffs(sde, t, s)

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self.sde._check_xt(x, t)
        a, tau2, std = self.coefficients(x, t)
        score = self.score_fn(x, t)
        x_mean = (x + batch_broadcast(tau2, x) * score) / batch_broadcast(a, x)
        return x_mean + batch_broadcast(std, x) * self.noise(x), x_mean


@register_predictor(name="none")
class NonePredictor(Predictor):
    """The predictor that does nothing (corrector-only sampling)."""

    identity = True

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


# ---------------------------------------------------------------------------------------------- correctors
def langevin_alpha(sde: SDE, t: Tensor, like: Tensor) -> Tensor:
    """The factor ``alpha_i`` of the Langevin step size, ``(B,)``: [SDE] Algorithm 5 (VP) uses ``1 - beta_i``.

    VP and sub-VP: ``alpha_i = 1 - beta_i`` with ``i = floor(t (N - 1) / T)``, from the beta table of the
    SDE's own schedule. Sub-VP shares VP's drift ``-beta(t) x / 2``, hence VP's per-step contraction
    ``sqrt(1 - beta_i)``, so it takes the same factor (the reference reads ``sde.alphas``, which its
    sub-VP lacks, and crashes). Any other SDE: ``1``, as VE in [SDE] Algorithm 4.
    """
    if isinstance(sde, (VPSDE, subVPSDE)):
        return sde._table("alphas", like)[sde._timestep(t)]
    return torch.ones_like(t)


class LangevinDynamics(Corrector):
    """``n_steps`` of unadjusted Langevin dynamics targeting ``p_t``:
    ``x_mean = x + eps s(x, t)``, ``x = x_mean + sqrt(2 eps) z``, with a per-sample step ``eps`` (``(B,)``)
    given by :meth:`step_size`.
    """

    @abc.abstractmethod
    def step_size(self, x: Tensor, t: Tensor, score: Tensor, noise: Tensor) -> Tensor:
        """The step ``eps`` of each sample, ``(B,)``."""

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self.sde._check_xt(x, t)
        x_mean = x
        for _ in range(self.n_steps):
            score = self.score_fn(x, t)
            noise = self.noise(x)
            eps = batch_broadcast(self.step_size(x, t, score, noise), x)
            x_mean = x + eps * score
            x = x_mean + torch.sqrt(2.0 * eps) * noise
        return x, x_mean


@register_corrector(name="langevin")
class LangevinCorrector(LangevinDynamics):
    """The reference's Langevin corrector, [SDE] Algorithms 4 (VE) / 5 (VP):
    ``eps = 2 alpha_i (r mean_b ||z_b|| / mean_b ||s_b||)^2`` with ``alpha_i`` from :func:`langevin_alpha`.

    The norms of the noise ``z_b`` and the score ``s_b`` are averaged over the batch, as the reference does: the
    step estimates the population ratio ``2 alpha_i r^2 D / J(p_t)`` (``J`` the Fisher information, below), so it
    is nearly the same for every state and the invariant law stays close to ``p_t`` in any dimension. The price
    is that every sample's step depends on the whole batch and on its size; :class:`AnnealedLangevinDynamics`
    (``"ald"``) has none. A score that is zero for the whole batch (an untrained network whose last layer starts at
    zero, as DiT's adaLN-Zero) leaves the rule undefined (the reference divides by zero: NaN samples); the step is
    then 0, no correction.
    """

    def step_size(self, x: Tensor, t: Tensor, score: Tensor, noise: Tensor) -> Tensor:
        noise_norm, score_norm = noise.flatten(1).norm(dim=1).mean(), score.flatten(1).norm(dim=1).mean()
        step = (self.snr * noise_norm / score_norm).square() * 2.0 * langevin_alpha(self.sde, t, x)  # the reference's order
        return torch.where(score_norm > 0, step, torch.zeros_like(step))


@register_corrector(name="ald")
class AnnealedLangevinDynamics(LangevinDynamics):
    """Annealed Langevin dynamics, Song & Ermon (2019) Algorithm 1: ``eps = 2 alpha_i (r sigma(t))^2`` with
    ``sigma(t)`` the std of the perturbation kernel and ``alpha_i`` from :func:`langevin_alpha` (sub-VP is
    supported, unlike the reference). The corrector whose samples do not depend on the rest of their batch.

    Why the step depends on ``t`` alone. Unadjusted Langevin dynamics ``x += eps s + sqrt(2 eps) z`` with a
    step ``eps(x)`` that varies with the state leaves ``p_t / eps`` invariant in the small-step limit (its
    Fokker-Planck equation is stationary at ``p`` only when ``grad eps = 0``), so a step computed from a
    sample's own state reweights the law towards states with small steps. The reference's rule applied to one
    sample, ``eps = 2 alpha_i r^2 ||z||^2 / ||s(x)||^2``, diverges for ``D <= 2`` (the step is unbounded near
    a mode centre, where ``s = 0``) and inflates the within-mode variance by a relative ``O(1 / D)`` above. A
    step fitted to the sample's own mode (a local Gaussian from two Tweedie estimates of the same sample) is
    exact within a mode, but smaller in narrow modes than in wide ones, so it moves weight into the narrow
    modes of a mixture (README, "PC correctors"). A step that is the same for every state is a function of
    ``t`` (and the model) only.

    Which function of ``t``. The batch rule estimates ``eps = 2 alpha_i r^2 D / J(p_t)``, ``J(p) = E_p ||grad log
    p||^2``. ``x(t) = alpha x(0) + sigma Z`` is a sum of independent terms, and Fisher information does not
    grow under convolution, ``J(X + Y) <= J(Y)`` (Stam 1959, Blachman 1965); with ``J(sigma Z) = D / sigma^2``
    this gives ``J(p_t) <= D / sigma(t)^2``: ``2 alpha_i r^2 sigma(t)^2`` never exceeds the batch rule's step
    in expectation, equals it where the noise dominates the data, and needs no knowledge of the data. It is
    ALD's step ``~ sigma_i^2``, here derived rather than postulated.
    """

    def step_size(self, x: Tensor, t: Tensor, score: Tensor, noise: Tensor) -> Tensor:
        std = self.sde.marginal_prob(x, t)[1]
        return 2.0 * langevin_alpha(self.sde, t, x) * (self.snr * std).square()


@register_corrector(name="none")
class NoneCorrector(Corrector):
    """The corrector that does nothing (predictor-only sampling)."""

    identity = True

    def update_fn(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


# ---------------------------------------------------------------------------------------------- sampler
UpdateHook = Callable[[Tensor, Tensor, Tensor], "tuple[Tensor, Tensor]"]
"""``hook(x, x_mean, t) -> (x, x_mean)``: a map applied by :func:`pc_sample` after every update (see there)."""


def check_n_steps(n_steps: int) -> int:
    """``n_steps`` if it is an integer >= 0, else ``ValueError``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
    return int(n_steps)


def pc_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    x_init: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    update_hook: UpdateHook | None = None,
) -> tuple[Tensor, int]:
    """Predictor-corrector sampling, [SDE] Algorithm 1 (general PC), 2 (VE) and 3 (VP).

    Starting from ``x ~ p_T`` (or ``x_init``), for each ``t`` of ``linspace(T, eps, N)`` (``N = sde.N``) run
    the corrector and then the predictor at ``t``, as the 2021 reference does.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)`` approximating ``grad_x log p_t(x)``.
        shape: ``(B, ...)``, the shape of the batch of samples.
        predictor: a name of :func:`available_predictors` (``reverse_diffusion``, ``euler_maruyama``,
            ``ancestral_sampling``, ``none`` or a registered one).
        corrector: a name of :func:`available_correctors`: ``langevin`` (the reference's batch-averaged step),
            ``ald`` (a step that depends on ``t`` only, so samples do not depend on their batch), ``none`` or a
            registered one.
        snr: the corrector's target signal-to-noise ratio ``r`` (> 0).
        n_steps: corrector steps per time (integer >= 0).
        probability_flow: True: the predictor steps the probability-flow ODE [SDE] eq. (13).
        denoise: True: return the noise-free mean of the last update made (for ``reverse_diffusion`` the
            reference's final denoising step), False: the last noisy iterate.
        eps: the last time of the grid, in ``(0, T)``.
        x_init: optional start ``(B, ...)`` instead of a prior draw.
        generator: the source of all randomness (same seed, same samples).
        device: where to sample (default: that of ``x_init``, else of ``generator``, else the CPU).
        progress: show a tqdm progress bar.
        dtype: the dtype of the samples (default: that of ``x_init``, else float32).
        update_hook: optional ``hook(x, x_mean, t) -> (x, x_mean)`` applied to the initial state (at ``t = T``)
            and after every corrector and predictor update, no-op ones included, with ``t`` (``(B,)``) the time
            the state then represents: ``t_i`` after the corrector, the next grid time ``t_{i+1}`` after the
            predictor (``0`` after the last one, whose ``x_mean`` estimates ``x(0)``). Conditional samplers
            (:mod:`samplers.controllable`) use it to impose known values; it draws its own noise.

    Returns:
        ``(x, nfe)``: the samples and the number of score evaluations made. Runs under ``torch.no_grad()``,
        like the reference; a ``score_fn`` that needs autograd must enable it itself.
    """
    sde = check_sde(sde)
    shape = check_shape(shape)
    predictor_cls = get_predictor(predictor)
    corrector_cls = get_corrector(corrector)
    snr = check_positive("snr", snr)
    n_steps = check_n_steps(n_steps)
    eps = check_eps(eps, sde)
    counted = CountingScoreFn(score_fn)
    step_predictor = predictor_cls(sde, counted, probability_flow=probability_flow, generator=generator)
    step_corrector = corrector_cls(sde, counted, snr=snr, n_steps=n_steps, generator=generator)
    if x_init is not None and not isinstance(x_init, Tensor):
        raise ValueError(f"x_init must be a tensor of shape {shape} or None, got {type(x_init).__name__}")
    if update_hook is not None and not callable(update_hook):
        raise ValueError(f"update_hook must be callable as hook(x, x_mean, t) or None, got {type(update_hook).__name__}")
    device = resolve_device(device, generator, x_init)
    dtype = resolve_dtype(dtype, x_init)
    x = initial_state(sde, shape, x_init, generator, device, dtype).to(dtype)
    # (update or None for a no-op step, whether the step advances time); no-op steps matter only to the hook
    steps = [
        (None if step.identity else step.update_fn, advances)
        for step, advances in ((step_corrector, False), (step_predictor, True))
        if update_hook is not None or not step.identity
    ]
    times = torch.linspace(sde.T, eps, sde.N, dtype=torch.float64).tolist()
    state_times = times[1:] + [0.0]  # the time the state represents after the predictor step at times[i]
    x_mean = x
    with torch.no_grad():
        if update_hook is not None:
            x, x_mean = update_hook(x, x, time_batch(sde.T, shape[0], x))
        for t, t_next in progress_bar(zip(times, state_times), progress, desc="pc_sample", total=sde.N):
            vec_t = time_batch(t, shape[0], x)
            for update, advances in steps:
                if update is not None:
                    x, x_mean = update(x, vec_t)
                if update_hook is not None:
                    x, x_mean = update_hook(x, x_mean, time_batch(t_next, shape[0], x) if advances else vec_t)
    return (x_mean if denoise else x), counted.nfe
