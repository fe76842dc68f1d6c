"""Shared helper of the tests that train a small labelled model on a Gaussian mixture with an exact answer."""

from __future__ import annotations

import torch

from sde_lib import GaussianMixture


def fit_on_mixture(
    model: torch.nn.Module,
    loss_fn,
    mixture: GaussianMixture,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    decay_at: int | None = None,
) -> torch.nn.Module:
    """Adam on fresh labelled batches of ``mixture`` (``loss_fn(model, x0, y, generator)``, every draw from
    ``generator``); the learning rate drops 10x at step ``decay_at``. Returns ``model``, trained in place."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        if step == decay_at:
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
        x0, y = mixture.sample_with_labels(batch, generator)
        loss = loss_fn(model, x0, y, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model
