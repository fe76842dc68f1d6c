"""A label-conditional MLP score network for classifier-free guidance (Ho & Salimans, 2022) on low-dimensional data.

:class:`ConditionalMLPScoreNet` is :class:`models.MLPScoreNet` (same trunk, noise-level labels, options and score
conventions through :class:`models.ScoreModel`) with a learned embedding of the class label ``y`` added to the
noise-level embedding that every residual block receives. The embedding table has ``num_classes + 1`` rows: the last
one, :attr:`ConditionalMLPScoreNet.null_label`, is the "no label" of the unconditional score, which training with
label dropout (:func:`train_lib.get_cfg_loss_fn`) teaches the same network.

``model(x, labels, class_labels=None)``: ``labels`` are the noise-level labels of :mod:`models.score_model`;
``class_labels`` ``(B,)`` int64 in ``[0, num_classes]`` (``num_classes`` = null), or ``None`` for the null label;
:class:`models.ScoreModel` passes them as its ``y``.

Config: those of :class:`models.MLPScoreNet` plus ``config.data.num_classes`` (required);
``config.model.name = "conditional_mlp"``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from base_lib.config import config_value

from .mlp import MLPScoreNet
from .registry import register_model


def check_class_labels(class_labels: Tensor | int | None, batch: int, num_classes: int, device: torch.device) -> Tensor:
    """``class_labels`` as ``(B,)`` int64 in ``[0, num_classes]`` (``num_classes`` = null; ``None`` -> all null), else ``ValueError``."""
    if class_labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    labels = torch.as_tensor(class_labels, device=device)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool or labels.ndim > 1:
        raise ValueError(f"class_labels must be an integer or a (B,) integer tensor, got {class_labels!r}")
    labels = labels.expand(batch) if labels.ndim == 0 else labels
    if labels.shape != (batch,) or (labels < 0).any() or (labels > num_classes).any():
        raise ValueError(
            f"class_labels must hold {batch} labels in [0, {num_classes}] ({num_classes} = null), "
            f"got shape {tuple(labels.shape)}"
        )
    return labels.long()


@register_model(name="conditional_mlp")
class ConditionalMLPScoreNet(MLPScoreNet):
    """:class:`models.MLPScoreNet` ``(x, labels, class_labels) -> (B, D)`` with a learned class embedding and a null class."""

    def __init__(self, dim: int, num_classes: int, **mlp_options: Any):
        super().__init__(dim, **mlp_options)  # the trunk and noise-level embedding of MLPScoreNet (same options)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.num_classes = num_classes  # labels 0..K-1; label K is the null label of the unconditional score
        width = self.input_proj.out_features
        self.class_embedding = nn.Embedding(num_classes + 1, width)  # class (and null) -> shift of the embedding

    @property
    def null_label(self) -> int:
        """The label standing for "no label" (the unconditional score): ``num_classes``."""
        return self.num_classes

    @classmethod
    def from_config(cls, config: Any) -> "ConditionalMLPScoreNet":
        """:meth:`models.MLPScoreNet.from_config` (the one reading of its fields) with ``config.data.num_classes``."""
        build = functools.partial(cls, num_classes=config_value(config, "data.num_classes"))
        return MLPScoreNet.from_config.__func__(build, config)

    def forward(self, x: Tensor, labels: Tensor, class_labels: Tensor | int | None = None) -> Tensor:
        self._check_inputs(x, labels)
        classes = check_class_labels(class_labels, x.shape[0], self.num_classes, x.device)
        return self.trunk(x, labels, self.label_features(labels) + self.class_embedding(classes))
