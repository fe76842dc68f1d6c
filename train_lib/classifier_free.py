"""Training and score functions of classifier-free guidance (Ho & Salimans, 2022) with a label-conditional network.

One network ``model(x, labels, class_labels)`` (e.g. :class:`models.conditional_mlp.ConditionalMLPScoreNet`) learns
both the conditional score ``grad log p_t(x | y)`` and, through a "null" class label, the unconditional one
``grad log p_t(x)``: during training each label is replaced by the null label with probability ``label_dropout``
(Ho & Salimans, algorithm 1), and the loss is otherwise the denoising score matching of [SDE] eq. (7) exactly as
:func:`train_lib.get_sde_loss_fn` computes it (it is called, not re-implemented).

* :func:`get_cfg_loss_fn`: ``loss_fn(model, x0, y, generator=None, per_example=False)``.
* :func:`cfg_score_fns`: ``(cond_score_fn(x, t, y), uncond_score_fn(x, t))`` for
  :func:`samplers.controllable.cfg_score_fn`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from models.conditional_mlp import ClassConditioned, check_class_labels
from models.score_fn import get_sampling_score_fn
from sde_lib import SDE, ScoreFn

from .losses import get_sde_loss_fn

CFGLossFn = Callable[..., Tensor]
"""``loss_fn(model, x0, y, generator=None, per_example=False)``: the scalar batch loss, or ``(B,)`` losses."""

LabelScoreFn = Callable[[Tensor, Tensor, "Tensor | int | None"], Tensor]


def _null_label(model: nn.Module) -> int:
    """The null label of a label-conditional network (also inside ``DistributedDataParallel``), else ``ValueError``."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    null = getattr(model, "null_label", None)
    if isinstance(null, bool) or not isinstance(null, int):
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
    continuous: bool = True,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
    eps: float = 1e-5,
) -> CFGLossFn:
    """Denoising score matching of a label-conditional network with label dropout (Ho & Salimans, 2022, algorithm 1).

    ``loss_fn(model, x0, y, generator=None, per_example=False)``: the labels ``y`` ``(B,)`` (in ``[0, K)``) are
    replaced by ``model.null_label`` with probability ``label_dropout`` each (drawn first from ``generator``), then
    the loss of :func:`train_lib.get_sde_loss_fn` (same options) is that of ``model`` with these labels bound
    (:class:`models.conditional_mlp.ClassConditioned`). ``label_dropout = 0`` trains the conditional score only,
    ``1`` the unconditional one only.
    """
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"label_dropout must be a probability in [0, 1], got {label_dropout!r}")
    dsm_loss = get_sde_loss_fn(
        sde, train, reduce_mean=reduce_mean, continuous=continuous, likelihood_weighting=likelihood_weighting,
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
        return dsm_loss(ClassConditioned(model, labels), x0, generator=generator, per_example=per_example)

    return loss_fn


def cfg_score_fns(
    model: nn.Module, sde: SDE, continuous: bool = True, dtype: torch.dtype | None = None
) -> tuple[LabelScoreFn, ScoreFn]:
    """``(cond_score_fn(x, t, y), uncond_score_fn(x, t))`` of a network trained by :func:`get_cfg_loss_fn`.

    Both are :func:`models.get_sampling_score_fn` (eval mode, the label conventions of ``continuous``, dtype
    handling) of the network with the class labels bound: ``y`` (one int or ``(B,)``; ``None`` = the null label)
    for the first, the null label for the second. Use as ``samplers.controllable.cfg_score_fn(cond, uncond, y, w)``.
    """
    null = _null_label(model)

    def cond_score_fn(x: Tensor, t: Tensor, y: Tensor | int | None) -> Tensor:
        labels = check_class_labels(y, x.shape[0], null, x.device)
        return get_sampling_score_fn(sde, ClassConditioned(model, labels), continuous=continuous, dtype=dtype)(x, t)

    uncond_score_fn = get_sampling_score_fn(sde, ClassConditioned(model, None), continuous=continuous, dtype=dtype)
    return cond_score_fn, uncond_score_fn
