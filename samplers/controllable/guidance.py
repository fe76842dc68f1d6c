"""Class-conditional sampling with an unconditional sampler: classifier guidance and classifier-free guidance.

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021),
section 5 and appendix I.1; [CFG] Ho & Salimans, "Classifier-Free Diffusion Guidance" (2022).

* :func:`guided_score_fn`: ``score + scale * grad_x log p_t(y | x)`` with a noise-conditional classifier
  ([SDE] eq. (14) and appendix I.1); :func:`classifier_log_prob_fn` reads a classifier network (trained by
  :func:`train_lib.get_classifier_loss_fn`) as the ``log p_t(y | x)`` it takes, :func:`classifier_log_prob_grad`
  is its gradient.
* :func:`cfg_score_fn`: classifier-free guidance ([CFG]), from a label-conditional score such as
  :meth:`models.ScoreModel.score` and the unconditional one (:meth:`models.ScoreModel.score_fn`).

Both wrap plain score functions and return a plain ``score_fn(x, t)``, usable with every sampler.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import Tensor, nn

from models.score_model import model_dtype
from sde_lib import ScoreFn

LabelScoreFn = Callable[[Tensor, Tensor, "Tensor | int | None"], Tensor]
"""``score_fn(x, t, y)``: a label-conditional score; ``y=None`` asks for the unconditional score."""


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


# ------------------------------------------------------------------------------------------ classifier guidance
def classifier_log_prob_fn(classifier: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``log_prob(x, t) -> (B, K)``: ``log p_t(y = k | x)``, the log-softmax of ``classifier(x, t)`` in eval mode.

    ``x`` and ``t`` are cast to the classifier's dtype (differentiably, so gradients reach ``x``) and the result back
    to the dtype of ``x``. Pass it to :func:`guided_score_fn`.
    """
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"classifier must be an nn.Module called as classifier(x, t) -> (B, K), got {type(classifier).__name__}")
    dtype = model_dtype(classifier)

    def log_prob(x: Tensor, t: Tensor) -> Tensor:
        classifier.eval()
        t = torch.as_tensor(t, dtype=dtype, device=x.device)
        return torch.log_softmax(classifier(x.to(dtype), t), dim=1).to(x.dtype)

    return log_prob


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
    ``x(t)``, trained on the same SDE perturbations (the JAX reference's ``config.sampling.classifier``; a network
    through :func:`classifier_log_prob_fn`); ``y``: one label or ``(B,)`` labels. ``scale = 1`` is Bayes' rule,
    ``grad log p_t(x | y)`` exactly when score and classifier are exact; ``scale > 1`` targets
    ``p_t(x) p_t(y | x)^scale``, sharper classes (Dhariwal & Nichol, 2021). The result is an ordinary
    ``score_fn(x, t)`` for any sampler; each call costs one score and one classifier gradient evaluation.
    """
    _check_callable("score_fn", score_fn, "score_fn(x, t)")
    _check_callable("log_prob_classifier_fn", log_prob_classifier_fn, "log_prob_classifier_fn(x, t) -> (B, K)")
    scale = _check_scale("scale", scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        return score_fn(x, t) + scale * classifier_log_prob_grad(log_prob_classifier_fn, x, t, y)

    return guided


# ------------------------------------------------------------------------------------------ classifier-free guidance
def cfg_score_fn(
    cond_score_fn: LabelScoreFn,
    uncond_score_fn: ScoreFn | None,
    y: int | Tensor,
    guidance_scale: float,
) -> ScoreFn:
    """Classifier-free guidance ([CFG] eq. (6) in score form): ``(1 + w) s(x, t, y) - w s(x, t)``.

    ``cond_score_fn(x, t, y)``: a label-conditional score (e.g. :meth:`models.ScoreModel.score`);
    ``uncond_score_fn(x, t)``: the unconditional one, or ``None`` to use ``cond_score_fn(x, t, None)`` (one network
    trained with label dropout, ``None`` standing for the null label). ``w = guidance_scale``: ``0`` gives the
    conditional score exactly, ``-1`` the unconditional one. In the other common convention,
    ``s_u + g (s_c - s_u)``, ``g = 1 + w``. With exact scores,
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
