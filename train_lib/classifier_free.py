"""Training of classifier-free guidance (Ho & Salimans, 2022) with a label-conditional network.

One network ``model(x, labels, class_labels)`` (e.g. :class:`models.conditional_mlp.ConditionalMLPScoreNet`) learns
both the conditional score ``grad log p_t(x | y)`` and, through a "null" class label, the unconditional one
``grad log p_t(x)``: during training each label is replaced by the null label with probability ``label_dropout``
(Ho & Salimans, algorithm 1), and the loss is otherwise the denoising score matching of [SDE] eq. (7) exactly as
:func:`train_lib.get_sde_loss_fn` computes it (it is called, not re-implemented).

:func:`get_cfg_loss_fn`: ``loss_fn(model, x0, y, generator=None, per_example=False)``. At sampling time both scores
come from one :class:`models.ScoreModel` (``score(x, t, y)`` and ``score(x, t)``), combined by
:func:`samplers.controllable.cfg_score_fn`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from models.score_model import Parameterization, null_label
from sde_lib import SDE

from .losses import get_sde_loss_fn

CFGLossFn = Callable[..., Tensor]
"""``loss_fn(model, x0, y, generator=None, per_example=False)``: the scalar batch loss, or ``(B,)`` losses."""


def _null_label(model: nn.Module) -> int:
    """The null label of a label-conditional network (also inside ``DistributedDataParallel``), else ``ValueError``."""
    null = null_label(model)
    if null is None:
        raise ValueError(
            f"model must be a label-conditional network with an integer null_label (e.g. ConditionalMLPScoreNet), "
            f"got {type(model).__name__}"
        )
    return null


def drop_labels(y: Tensor, null_label: int, label_dropout: float, generator: torch.Generator | None) -> Tensor:
    """``y`` with each label replaced by ``null_label`` independently with probability ``label_dropout``."""
    drop = torch.rand(y.shape, generator=generator, device=y.device) < label_dropout
    return torch.where(drop, torch.full_like(y, null_label), y)


def get_cfg_loss_fn(
    sde: SDE,
    label_dropout: float = 0.1,
    train: bool = True,
    reduce_mean: bool = True,
    parameterization: Parameterization | str | None = None,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
    eps: float = 1e-5,
) -> CFGLossFn:
    """Denoising score matching of a label-conditional network with label dropout (Ho & Salimans, 2022, algorithm 1).

    ``loss_fn(model, x0, y, generator=None, per_example=False)``: the labels ``y`` ``(B,)`` (in ``[0, K)``) are
    replaced by ``model.null_label`` with probability ``label_dropout`` each (drawn first from ``generator``), then
    the loss of :func:`train_lib.get_sde_loss_fn` (same options) is that of ``model`` with these labels.
    ``label_dropout = 0`` trains the conditional score only, ``1`` the unconditional one only.
    """
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"label_dropout must be a probability in [0, 1], got {label_dropout!r}")
    dsm_loss = get_sde_loss_fn(
        sde, train, reduce_mean=reduce_mean, parameterization=parameterization, likelihood_weighting=likelihood_weighting,
        importance_weighting=importance_weighting, eps=eps,
    )

    def loss_fn(
        model: nn.Module, x0: Tensor, y: Tensor, generator: torch.Generator | None = None, per_example: bool = False
    ) -> Tensor:
        null = _null_label(model)
        if not isinstance(x0, Tensor) or x0.ndim < 1:
            raise ValueError(f"x0 must be a tensor of shape (B, ...), got {type(x0).__name__}")
        if (
            not isinstance(y, Tensor)
            or y.shape != (x0.shape[0],)
            or y.dtype.is_floating_point
            or y.dtype == torch.bool
            or (y < 0).any()
            or (y >= null).any()
        ):
            raise ValueError(f"y must be a (B,) integer tensor of class labels in [0, {null}), one per row of x0")
        labels = drop_labels(y.to(x0.device).long(), null, float(label_dropout), generator)
        return dsm_loss(model, x0, generator=generator, per_example=per_example, y=labels)

    return loss_fn
