"""NCSN v1 score network (Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution", 2019).

The RefineNet of :mod:`models.refinenet` in the depth of :class:`models.ncsnv2.NCSNv2` (one down-sampling, then
dilated stages), but conditioned on the noise level through every normalisation layer: each is a conditional
InstanceNorm++ (NCSN appendix A.1, CondInstanceNorm++) whose ``gamma``, ``alpha``, ``beta`` are row ``labels`` of
a table with one row per noise level. The chained residual pooling averages (NCSN) instead of taking the maximum
(NCSNv2), and the output is **not** divided by sigma. ``labels`` are int64 indices (discrete VE SDE, index 0 =
``sigma_max``); the network has no ``sigmas`` buffer.

Registered as ``"ncsn"``, with the 2021 reference's parameter names and shapes, as repaired in the fixtures' README
(the reference as shipped cannot build this network): every normalisation is
``ConditionalInstanceNorm2dPlus(C, num_classes)``, dilated convolutions keep the resolution.

Config (read only by :meth:`NCSN.from_config`): ``data.num_channels``, ``data.image_size`` (even, >= 4),
``data.centered``, ``model.nf``, ``model.normalization`` (``'InstanceNorm++'``), ``model.nonlinearity``, and
``model.num_classes`` (rows of the tables), which defaults to ``model.num_scales`` as no shipped config sets it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from base_lib.config import config_value
from base_lib.checks import check_positive_int

from .ncsnv2 import NCSNv2
from .normalization import get_normalization
from .refinenet import RefineNet, check_labels
from .registry import register_model


@register_model(name="ncsn")
class NCSN(RefineNet):
    """NCSN v1: ``f(x, labels)``, noise-conditional through the conditional InstanceNorm++ tables."""

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        nf: int = 128,
        num_classes: int = 10,
        normalization: str = "InstanceNorm++",
        nonlinearity: str = "elu",
        centered: bool = False,
    ):
        num_classes = check_positive_int("num_classes", num_classes)  # noise levels: labels in [0, num_classes)
        super().__init__(
            num_channels=num_channels,  # image channels C
            image_size=image_size,  # height = width of the images the network is built for
            nf=nf,  # base width: stages have nf and 2 nf channels
            stages=NCSNv2.STAGES,  # NCSNv2's 64-px topology, as in the reference
            norm=get_normalization(normalization, num_classes),  # conditional InstanceNorm++ everywhere
            nonlinearity=nonlinearity,  # "elu" | "relu" | "lrelu" | "swish"
            centered=centered,  # inputs already in [-1, 1]; otherwise x -> 2 x - 1
            conditional=True,
        )
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, config: Any) -> "NCSN":
        """Build from ``config.data`` and ``config.model`` (fields in the module docstring)."""
        num_classes = config_value(config, "model.num_classes", None)  # no shipped config sets it
        return cls(
            num_channels=config_value(config, "data.num_channels"),
            image_size=config_value(config, "data.image_size"),
            nf=config_value(config, "model.nf"),
            num_classes=config_value(config, "model.num_scales") if num_classes is None else num_classes,
            normalization=config_value(config, "model.normalization", "InstanceNorm++"),
            nonlinearity=config_value(config, "model.nonlinearity", "elu"),
            centered=config_value(config, "data.centered", False),
        )

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """``f(x, labels)`` in the dtype of ``x``; ``labels`` int64 in ``[0, num_classes)``."""
        self._check_x(x)
        check_labels(labels, x.shape[0], self.num_classes)
        return self.features(x, labels)
