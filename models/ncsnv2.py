"""NCSNv2 score networks (Song & Ermon, "Improved Techniques for Training Score-Based Generative Models", 2020).

A RefineNet (see :mod:`models.refinenet`) with unconditional InstanceNorm++ whose output is divided by the noise
scale, ``s(x, i) = f(x) / sigma_i`` (NCSNv2 section 4.2, Technique 3): the network is conditioned on the noise
level only through this division. ``labels`` are int64 indices into the ``sigmas`` buffer (discrete VE SDE,
index 0 = ``sigma_max``), as the ``smld`` parameterization of :class:`models.ScoreModel` hands them. The division uses
the ``sigmas`` buffer as loaded (float64, like the reference's), never a ladder recomputed from the config.

Three depths, registered under the 2021 reference's config names (parameter names and shapes identical to it):

* :class:`NCSNv2` (``"ncsnv2_64"``): CIFAR-10 (32 px) and CelebA (64 px); one down-sampling, then two dilated
  stages (dilation 2 and 4) at half resolution; ``image_size`` even and >= 4.
* :class:`NCSNv2Deeper` (``"ncsnv2_128"``): LSUN at 96-128 px; two down-samplings, widths up to ``4 nf``;
  ``image_size`` a multiple of 4, >= 8.
* :class:`NCSNv2Deepest` (``"ncsnv2_256"``): 129-256 px; three down-samplings; ``image_size`` a multiple of 8, >= 16.

Config (read only by ``from_config``): ``data.num_channels``, ``data.image_size``, ``data.centered`` (inputs
in [0, 1] are mapped to ``2 x - 1`` unless centered), ``model.nf``, ``model.normalization``
(``'InstanceNorm++'`` in every shipped config; also ``'InstanceNorm'``, ``'VarianceNorm'``),
``model.nonlinearity``, ``model.num_scales``, ``model.sigma_min``, ``model.sigma_max``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from base_lib.config import config_value
from base_lib.checks import check_finite_positive, check_positive_int

from .normalization import get_normalization
from .refinenet import RefineNet, Stage, check_labels
from .registry import register_model


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """``sigma_i = exp(log sigma_max + i (log sigma_min - log sigma_max) / (N - 1))``, float64, largest first."""
    return torch.from_numpy(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)))


@register_model(name="ncsnv2_64")
class NCSNv2(RefineNet):
    """NCSNv2 for images up to 64 px: ``f(x) / sigmas[labels]`` with the RefineNet ``f`` of :class:`RefineNet`."""

    STAGES = (
        Stage("res1", "refine4", 1),
        Stage("res2", "refine3", 2, down=True),
        Stage("res3", "refine2", 2, down=True, dilation=2),
        Stage("res4", "refine1", 2, down=True, dilation=4),
    )
    REFINE_ORDER: tuple[str, ...] | None = None  # the reference registers the refine blocks in decoding order

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        nf: int = 128,
        num_scales: int = 232,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        normalization: str = "InstanceNorm++",
        nonlinearity: str = "elu",
        centered: bool = False,
    ):
        num_scales = check_positive_int("num_scales", num_scales)  # N noise levels: labels in [0, N)
        sigma_min = check_finite_positive("sigma_min", sigma_min)  # smallest noise scale (index N - 1)
        sigma_max = check_finite_positive("sigma_max", sigma_max)  # largest noise scale (index 0)
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        super().__init__(
            num_channels=num_channels,  # image channels C
            image_size=image_size,  # height = width of the images the network is built for
            nf=nf,  # base width: stages have nf, 2 nf (and 4 nf for the deeper variants) channels
            stages=self.STAGES,
            norm=get_normalization(normalization),  # unconditional normalisation of every residual block
            nonlinearity=nonlinearity,  # "elu" | "relu" | "lrelu" | "swish"
            centered=centered,  # inputs already in [-1, 1]; otherwise x -> 2 x - 1
            conditional=False,
            refine_order=self.REFINE_ORDER,
        )
        self.num_scales = num_scales
        # the noise ladder the output is divided by; a loaded checkpoint's buffer replaces it
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))

    @classmethod
    def from_config(cls, config: Any) -> "NCSNv2":
        """Build from ``config.data`` and ``config.model`` (fields in the module docstring)."""
        return cls(
            num_channels=config_value(config, "data.num_channels"),
            image_size=config_value(config, "data.image_size"),
            nf=config_value(config, "model.nf"),
            num_scales=config_value(config, "model.num_scales"),
            sigma_min=config_value(config, "model.sigma_min"),
            sigma_max=config_value(config, "model.sigma_max"),
            normalization=config_value(config, "model.normalization", "InstanceNorm++"),
            nonlinearity=config_value(config, "model.nonlinearity", "elu"),
            centered=config_value(config, "data.centered", False),
        )

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """``f(x) / sigmas[labels]`` in the dtype of ``x`` (the reference returns float64 through its buffer)."""
        self._check_x(x)
        check_labels(labels, x.shape[0], self.sigmas.shape[0])
        out = self.features(x, None)
        return out / self.sigmas[labels].to(out.dtype)[:, None, None, None]


@register_model(name="ncsnv2_128")
class NCSNv2Deeper(NCSNv2):
    """NCSNv2 for 96-128 px images (the reference's ``NCSNv2_128``): one more stage, widths up to ``4 nf``."""

    STAGES = (
        Stage("res1", "refine5", 1),
        Stage("res2", "refine4", 2, down=True),
        Stage("res3", "refine3", 2, down=True),
        Stage("res4", "refine2", 4, down=True, dilation=2),
        Stage("res5", "refine1", 4, down=True, dilation=4),
    )


@register_model(name="ncsnv2_256")
class NCSNv2Deepest(NCSNv2):
    """NCSNv2 for 129-256 px images (the reference's ``NCSNv2_256``): a third down-sampling stage ``res31``."""

    STAGES = (
        Stage("res1", "refine5", 1),
        Stage("res2", "refine4", 2, down=True),
        Stage("res3", "refine3", 2, down=True),
        Stage("res31", "refine31", 2, down=True),
        Stage("res4", "refine2", 4, down=True, dilation=2),
        Stage("res5", "refine1", 4, down=True, dilation=4),
    )
    # the reference defines refine3 before refine31 although it decodes refine31 first
    REFINE_ORDER = ("refine1", "refine2", "refine3", "refine31", "refine4", "refine5")
