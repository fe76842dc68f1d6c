"""Training of the noise-conditional classifier of classifier guidance, on the perturbations of the score model's SDE.

[SDE] (Song et al., ICLR 2021) section 5 and appendix I.1: class-conditional samples follow the reverse SDE with
``grad_x log p_t(x) + grad_x log p_t(y | x)`` (eq. (14)), where ``p_t(y | x(t))`` is a classifier of the *noisy*
data ``x(t) = mean(x0, t) + std(t) z``. It is trained by cross-entropy on exactly the perturbations the score model
sees: ``t ~ U(eps, T)``, ``z ~ N(0, I)``, ``x(t)`` from ``sde.marginal_prob``. Its minimiser is the exact posterior
``p_t(y | x(t))`` at every ``t`` (cross-entropy is a proper scoring rule).

:func:`get_classifier_loss_fn`: ``loss_fn(classifier, x0, y, generator=None, per_example=False)``. At sampling time
:func:`samplers.classifier_log_prob_fn` reads the trained classifier as ``log_prob(x, t) -> (B, K)`` for
:func:`samplers.guided_score_fn`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samplers.common import check_eps
from sde_lib import SDE
from base_lib.checks import check_bool

from .losses import perturb_data, uniform_times

ClassifierLossFn = Callable[..., Tensor]
"""``loss_fn(classifier, x0, y, generator=None, per_example=False)``: the mean cross-entropy, or ``(B,)`` values."""


def perturb(sde: SDE, x0: Tensor, eps: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``(x(t), t)`` with ``t ~ U(eps, T)`` and ``x(t) = mean(x0, t) + std(t) z``, ``z ~ N(0, I)``: [SDE] eq. (7)'s draws."""
    t = uniform_times(sde, x0, eps, generator)
    return perturb_data(sde, x0, t, generator)[0], t


def _check_data(x0: Tensor, y: Tensor) -> None:
    if not isinstance(x0, Tensor) or x0.ndim < 2 or not x0.is_floating_point() or x0.shape[0] < 1:
        got = f"{tuple(x0.shape)} {x0.dtype}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a floating-point tensor of shape (B, ...) with B >= 1, got {got}")
    if (
        not isinstance(y, Tensor)
        or y.shape != (x0.shape[0],)
        or y.dtype.is_floating_point
        or y.dtype.is_complex
        or y.dtype == torch.bool
    ):
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor of shape (B,) = ({x0.shape[0]},), one label per row of x0; got {got}")


def get_classifier_loss_fn(sde: SDE, eps: float = 1e-5, train: bool = True) -> ClassifierLossFn:
    """Cross-entropy of ``classifier(x(t), t)`` (logits ``(B, K)``) against the labels ``y`` of the clean data ``x0``.

    Per sample: ``t ~ U(eps, T)``, ``x(t) = mean(x0, t) + std(t) z`` (:func:`perturb`, the draws of the score
    model's loss :func:`train_lib.get_sde_loss_fn`) and ``-log softmax(classifier(x(t), t))_y``. ``train`` puts the
    classifier in training mode. All random draws use ``generator``. Raises ``ValueError`` on bad arguments.
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
    eps = check_eps(eps, sde)
    check_bool("train", train)

    def loss_fn(
        classifier: nn.Module, x0: Tensor, y: Tensor, generator: torch.Generator | None = None, per_example: bool = False
    ) -> Tensor:
        _check_data(x0, y)
        x_t, t = perturb(sde, x0, eps, generator)
        classifier.train(train)
        logits = classifier(x_t, t)
        if logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
            raise ValueError(f"the classifier must return logits (B, K) = ({x0.shape[0]}, K), got {tuple(logits.shape)}")
        losses = F.cross_entropy(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits,
                                 y.to(logits.device).long(), reduction="none")
        return losses if per_example else losses.mean()

    return loss_fn
