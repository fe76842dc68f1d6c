"""Gaussian-mixture data and its exact perturbed densities and scores under any :class:`LinearSDE`.

If ``x(0) ~ sum_k w_k N(mu_k, diag(v_k))`` and the kernel is ``N(alpha(t) x(0), sigma(t)^2 I)`` [SDE,
eq. (29)], then ``x(t) ~ sum_k w_k N(alpha mu_k, diag(alpha^2 v_k + sigma^2))``: the exact ``log p_t`` and
score ``grad_x log p_t`` are available in closed form. Samplers and likelihoods are tested against these,
so that the only error measured is that of the numerical method.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from base_lib.checks import check_positive_int

from .base import LinearSDE, batch_broadcast


class GaussianMixture:
    """``sum_k w_k N(mu_k, diag(v_k))`` on events of any shape ``E`` (points ``(D,)``, images ``(C, H, W)``).

    A single Gaussian is the case ``K = 1``. Parameters are kept in float64; evaluations run in the dtype and
    device of the input.
    """

    def __init__(self, weights: Sequence[float] | Tensor, means: Tensor, variances: float | Tensor):
        means = torch.as_tensor(means, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, *event_shape), got {tuple(means.shape)}")
        if weights.shape != (means.shape[0],):
            raise ValueError(f"weights must have shape (K,) = ({means.shape[0]},), got {tuple(weights.shape)}")
        if (weights < 0).any() or not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"weights must be non-negative and sum to 1, got {weights.tolist()}")
        try:
            variances = torch.broadcast_to(torch.as_tensor(variances, dtype=torch.float64), means.shape).clone()
        except RuntimeError:
            raise ValueError(f"variances must broadcast to the shape of means {tuple(means.shape)}") from None
        if not (variances > 0).all():
            raise ValueError("variances must be > 0")
        self.weights = weights  # (K,) mixture weights
        self.means = means  # (K, *E) component means
        self.variances = variances  # (K, *E) per-coordinate component variances

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        """Mean of the mixture, shape ``E``."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def variance(self) -> Tensor:
        """Per-coordinate variance of the mixture (law of total variance), shape ``E``."""
        second = torch.einsum("k,k...->...", self.weights, self.variances + self.means.square())
        return second - self.mean().square()

    def perturbed(self, sde: LinearSDE, t: float) -> "GaussianMixture":
        """The law of ``x(t)`` at a single time ``t``: components ``N(alpha mu_k, alpha^2 v_k + sigma^2)``."""
        tt = torch.tensor([float(t)], dtype=torch.float64)
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(sde._check_t(tt)))
        return GaussianMixture(self.weights, alpha * self.means, alpha**2 * self.variances + sigma**2)

    def sample_with_labels(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """``n`` i.i.d. samples ``(n, *E)`` and the index ``(n,)`` of the component each was drawn from."""
        check_positive_int("n", n)
        if device is None:
            device = generator.device if generator is not None else "cpu"
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.event_shape), generator=generator, device=device, dtype=torch.float64)
        x = self.means.to(device)[k] + self.variances.to(device)[k].sqrt() * noise
        return x.to(dtype), k

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``n`` i.i.d. samples, shape ``(n, *E)``."""
        return self.sample_with_labels(n, generator=generator, device=device, dtype=dtype)[0]

    # ------------------------------------------------------------------ densities
    def _component_terms(
        self, x: Tensor, alpha: Tensor | None = None, sigma: Tensor | None = None
    ) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """Per-sample, per-component log-weight + log-density ``(B, K)``, and the map from responsibilities
        ``r`` ``(B, K)`` to ``-sum_k r_k (x - m_k) / var_k`` (the score when ``r = softmax(logits)``).

        With ``alpha``, ``sigma`` (each ``(B,)``) the components are those of the perturbed law
        ``N(alpha mu_k, alpha^2 v_k + sigma^2)``. When every sample has the same ``(alpha, sigma)`` (the solvers'
        calls) and ``x`` is float64, the quadratic forms are matrix products,
        ``sum_d (x - m_k)^2 / V_k = x^2 . (1 / V_k) - 2 x . (m_k / V_k) + m_k^2 . (1 / V_k)``, and the score is
        ``r @ (m / V) - x * (r @ (1 / V))``: no ``(B, K, D)`` tensor. That expansion loses about
        ``eps * D * x^2 / V`` to cancellation, below 1e-9 in float64; other dtypes take the direct form.
        """
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, *{self.event_shape}), got {tuple(x.shape)}")
        log_weights = torch.log(self.weights.to(x))[None]
        if x.dtype == torch.float64 and (
            alpha is None or bool(((alpha == alpha[0]) & (sigma == sigma[0])).all())
        ):
            scale, noise = (1.0, 0.0) if alpha is None else (alpha[0], sigma[0])
            flat = x.reshape(x.shape[0], -1)
            means = scale * self.means.to(x).reshape(self.num_components, -1)  # (K, D)
            precision = 1.0 / (scale**2 * self.variances.to(x).reshape(self.num_components, -1) + noise**2)
            scaled_means = means * precision
            quad = flat.square() @ precision.T - 2.0 * (flat @ scaled_means.T) + (means * scaled_means).sum(1)
            logits = log_weights - 0.5 * (quad - torch.log(precision / (2 * math.pi)).sum(1))

            def weighted(resp: Tensor) -> Tensor:
                return (resp @ scaled_means - flat * (resp @ precision)).reshape(x.shape)

            return logits, weighted
        means = self.means.to(x)[None]  # (1, K, *E)
        var = self.variances.to(x)[None]
        if alpha is not None:
            means = batch_broadcast(alpha, means) * means
            var = batch_broadcast(alpha.square(), var) * var + batch_broadcast(sigma.square(), var)
        diff = x[:, None] - means  # (B, K, *E)
        quad = (diff.square() / var + torch.log(2 * math.pi * var)).flatten(2).sum(-1)  # (B, K)

        def weighted(resp: Tensor) -> Tensor:
            return -(resp.reshape(*resp.shape, *([1] * (diff.ndim - 2))) * diff / var).sum(1)

        return log_weights - 0.5 * quad, weighted

    @staticmethod
    def _log_prob(logits: Tensor) -> Tensor:
        return torch.logsumexp(logits, dim=1)

    @staticmethod
    def _score(logits: Tensor, weighted: Callable[[Tensor], Tensor]) -> Tensor:
        """``-sum_k r_k (x - m_k) / var_k`` with responsibilities ``r = softmax(logits)``."""
        return weighted(torch.softmax(logits, dim=1))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)``, shape ``(B,)``."""
        return self._log_prob(self._component_terms(x)[0])

    def score(self, x: Tensor) -> Tensor:
        """``grad_x log p(x)``, shaped like ``x``."""
        return self._score(*self._component_terms(x))

    def most_probable_component(self, x: Tensor) -> Tensor:
        """``argmax_k w_k N(x; mu_k, diag(v_k))``: the data component each point ``(B, *E)`` most probably came from, ``(B,)``."""
        return self._component_terms(x)[0].argmax(dim=1)

    def log_prob_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``log_p(x, t) -> (B,)``: exact log-density of ``x(t)`` under ``sde``, one time per sample."""

        def log_p(x: Tensor, t: Tensor) -> Tensor:
            t = sde._check_xt(x, t)
            return self._log_prob(self._component_terms(x, *sde.marginal_coeffs(t))[0])

        return log_p

    def score_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``score(x, t)``: exact ``grad_x log p_t(x)`` under ``sde``, one time per sample."""

        def score(x: Tensor, t: Tensor) -> Tensor:
            t = sde._check_xt(x, t)
            return self._score(*self._component_terms(x, *sde.marginal_coeffs(t)))

        return score

    # ------------------------------------------------------------------ components as class labels
    def component(self, k: int) -> "GaussianMixture":
        """Component ``k`` alone, ``N(mu_k, diag(v_k))``: the data given the label ``y = k``."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_components:
            raise ValueError(f"k must be a component index in [0, {self.num_components}), got {k!r}")
        return GaussianMixture(torch.ones(1, dtype=torch.float64), self.means[k : k + 1], self.variances[k : k + 1])

    def _labels(self, y: int | Tensor, x: Tensor) -> Tensor:
        """``y`` as a ``(B,)`` int64 tensor of component indices on the device of ``x``, else ``ValueError``."""
        y = torch.as_tensor(y, device=x.device)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim > 1:
            raise ValueError(f"y must be an integer or a (B,) integer tensor of component indices, got {y!r}")
        y = y.expand(x.shape[0]) if y.ndim == 0 else y
        if y.shape != (x.shape[0],) or (y < 0).any() or (y >= self.num_components).any():
            raise ValueError(f"y must hold {x.shape[0]} component indices in [0, {self.num_components}), got shape {tuple(y.shape)}")
        return y.long()

    def component_log_posterior_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``log_post(x, t) -> (B, K)``: ``log p_t(y = k | x(t) = x) = log w_k N(x; alpha mu_k, alpha^2 v_k + sigma^2) - log p_t(x)``.

        With the components as class labels this is the exact noise-conditional classifier of the perturbed
        data (the classifier of [SDE] section 5 / appendix I.1, trained on the same SDE perturbations);
        Bayes' rule gives ``grad_x log p_t(x) + grad_x log p_t(y | x) = grad_x log p_t(x | y)``.
        """

        def log_post(x: Tensor, t: Tensor) -> Tensor:
            t = sde._check_xt(x, t)
            return torch.log_softmax(self._component_terms(x, *sde.marginal_coeffs(t))[0], dim=1)

        return log_post

    def component_score_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor, Tensor | int | None], Tensor]:
        """``score(x, t, y)``: the exact label-conditional score ``grad_x log p_t(x | y)`` of component ``y_b`` per sample,
        ``-(x - alpha mu_y) / (alpha^2 v_y + sigma^2)``; ``y=None`` gives the mixture's score ``grad_x log p_t(x)``
        (the unconditional model of classifier-free guidance, as a null label does after label dropout).
        """
        mixture_score = self.score_fn(sde)

        def score(x: Tensor, t: Tensor, y: Tensor | int | None) -> Tensor:
            if y is None:
                return mixture_score(x, t)
            t = sde._check_xt(x, t)
            k = self._labels(y, x)
            if tuple(x.shape[1:]) != self.event_shape:
                raise ValueError(f"x must have shape (B, *{self.event_shape}), got {tuple(x.shape)}")
            alpha, sigma = sde.marginal_coeffs(t)
            means, var = self.means.to(x)[k], self.variances.to(x)[k]
            var = batch_broadcast(alpha.square(), var) * var + batch_broadcast(sigma.square(), var)
            return -(x - batch_broadcast(alpha, means) * means) / var

        return score

    # ------------------------------------------------------------------ common test densities
    @classmethod
    def ring(cls, num_components: int = 8, radius: float = 4.0, std: float = 0.3) -> "GaussianMixture":
        """Equal-weight 2-D components on a circle (the "8 Gaussians" density for ``num_components=8``)."""
        angles = torch.arange(num_components, dtype=torch.float64) * (2 * math.pi / num_components)
        means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        return cls(torch.full((num_components,), 1.0 / num_components, dtype=torch.float64), means, std**2)

    @classmethod
    def uneven(cls) -> "GaussianMixture":
        """A 2-D mixture of a heavy narrow component (weight 0.6, variance 0.01) beside four light wide ones
        (weights 0.15-0.05, variances 0.25-1), 2.5-3.6 away: a hard case for samplers tuned on :meth:`ring`."""
        means = torch.tensor([[0.0, 0.0], [2.5, 0.5], [-2.0, 2.0], [0.5, -3.0], [-3.0, -2.0]], dtype=torch.float64)
        variances = torch.tensor([0.01, 0.25, 0.5, 1.0, 0.36], dtype=torch.float64)[:, None].expand(5, 2)
        return cls([0.6, 0.15, 0.1, 0.1, 0.05], means, variances)

    @classmethod
    def gaussian(cls, mean: Tensor, variance: float | Tensor) -> "GaussianMixture":
        """A single Gaussian ``N(mean, diag(variance))`` with ``mean`` of the event shape."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        return cls(torch.ones(1, dtype=torch.float64), mean[None], torch.as_tensor(variance, dtype=torch.float64))

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, event_shape={self.event_shape})"
