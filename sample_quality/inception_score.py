"""Inception score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016, Sec. 4)."""

from __future__ import annotations

import numpy as np
import torch


def inception_score(logits_or_probs: np.ndarray | torch.Tensor, splits: int = 10, probabilities: bool = False) -> tuple[float, float]:
    """``IS = exp(E_x KL(p(y | x) || p(y)))`` with ``p(y)`` the mean of ``p(y | x)`` over the split, for each of
    ``splits`` contiguous parts of the ``N`` rows (sizes differ by at most one, ``torch.tensor_split``); returns the mean and the
    standard deviation (divisor ``splits``) over the parts. Rows are classifier logits ``(N, K)`` (softmax taken
    here, in float64), or class probabilities when ``probabilities``."""
    x = torch.as_tensor(logits_or_probs).detach().to("cpu", torch.float64)
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    if x.ndim != 2 or x.shape[0] < splits:
        raise ValueError(f"need (N, K) scores with N >= splits = {splits}, got shape {tuple(x.shape)}")
    log_p = torch.log(x / x.sum(dim=1, keepdim=True)) if probabilities else torch.log_softmax(x, dim=1)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # log p(y) = log mean_x p(y | x)
        kl = (part.exp() * (part - log_marginal)).nansum(dim=1)  # 0 log 0 = 0
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))
