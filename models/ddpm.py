"""The DDPM U-Net (Ho et al., 2020, appendix B) as the 2021 reference's ``models/ddpm.py`` builds it (config name
``"ddpm"``).

It is the NCSN++ U-Net of :mod:`models.ncsnpp` with DDPM's choices fixed: DDPM residual blocks without
``skip_rescale``, separate (non-FIR) up/down-sampling layers, the sinusoidal embedding of the labels, no
progressive growing, near-zero initialisation of every residual branch's last layer (``init_scale=0``) and 32
normalisation groups everywhere (so every channel count must be a multiple of 32). Its reference modules appear
in the same order, so :meth:`~models.ncsnpp.NCSNpp.reference_key_map` maps the reference's ``all_modules.<i>``
keys here too.

Labels: whatever :class:`models.ScoreModel` passes for VP/sub-VP (``t * 999`` or ``t * (N - 1)``, float);
``scale_by_sigma`` divides the output by ``sigmas[labels]`` and then needs integer step indices.

Config (read by :meth:`DDPM.from_config`): ``data.image_size``, ``model.nf``, ``ch_mult``, ``num_res_blocks``,
``attn_resolutions`` (required); ``data.num_channels`` [3], ``data.centered`` [False], ``model.dropout`` [0.1],
``resamp_with_conv`` [True], ``conditional`` [True], ``scale_by_sigma`` [False], ``nonlinearity`` ["swish"],
``sigma_min`` [0.01], ``sigma_max`` [50], ``num_scales`` [1000]; ``model.class_conditional`` [False] with
``data.num_classes``: a class embedding with a null label, as :class:`models.NCSNpp` (classifier-free guidance).
"""

from __future__ import annotations

from typing import Any, Sequence

from base_lib.config import config_value

from .ncsnpp import NCSNpp, class_count_from_config
from .registry import register_model

DDPM_NORM_GROUPS = 32  # DDPM's GroupNorm group count


@register_model(name="ddpm")
class DDPM(NCSNpp):
    """DDPM U-Net ``(x (B, C, H, W), labels (B,)) -> (B, C, H, W)``; see the module docstring."""

    def __init__(
        self,
        image_size: int,  # height = width of the inputs
        num_channels: int = 3,  # image channels C
        nf: int = 128,  # base channel count (every nf * m must be a multiple of 32)
        ch_mult: Sequence[int] = (1, 2, 2, 2),  # channels nf * m at resolution image_size / 2^level
        num_res_blocks: int = 2,  # residual blocks per resolution (encoder; decoder has one more)
        attn_resolutions: Sequence[int] = (16,),  # resolutions with self-attention
        dropout: float = 0.1,  # dropout inside the residual blocks
        resamp_with_conv: bool = True,  # learned up/down-sampling convolutions
        conditional: bool = True,  # condition on the time step
        scale_by_sigma: bool = False,  # divide the output by sigmas[labels] (integer labels)
        centered: bool = False,  # inputs in [-1, 1] (else [0, 1], mapped to 2x - 1)
        nonlinearity: str = "swish",  # "swish" | "elu" | "relu" | "lrelu"
        sigma_min: float = 0.01,  # the sigmas buffer: smallest noise scale
        sigma_max: float = 50.0,  # largest noise scale
        num_scales: int = 1000,  # number of noise scales
        num_classes: int | None = None,  # class-conditional with a null label (classifier-free guidance); None: not
    ):
        super().__init__(
            image_size=image_size, num_channels=num_channels, nf=nf, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions, dropout=dropout, resamp_with_conv=resamp_with_conv,
            conditional=conditional, scale_by_sigma=scale_by_sigma, centered=centered, nonlinearity=nonlinearity,
            sigma_min=sigma_min, sigma_max=sigma_max, num_scales=num_scales, num_classes=num_classes,
            # DDPM's fixed choices
            resblock_type="ddpm", fir=False, skip_rescale=False, progressive="none", progressive_input="none",
            embedding_type="positional", init_scale=0.0, norm_groups=DDPM_NORM_GROUPS,
        )

    @classmethod
    def from_config(cls, config: Any) -> "DDPM":
        """Build from ``config.data`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default=...: config_value(config, f"model.{name}", default)  # noqa: E731
        return cls(
            image_size=config_value(config, "data.image_size"),
            num_channels=config_value(config, "data.num_channels", 3),
            nf=field("nf"),
            ch_mult=field("ch_mult"),
            num_res_blocks=field("num_res_blocks"),
            attn_resolutions=field("attn_resolutions"),
            dropout=field("dropout", 0.1),
            resamp_with_conv=field("resamp_with_conv", True),
            conditional=field("conditional", True),
            scale_by_sigma=field("scale_by_sigma", False),
            centered=config_value(config, "data.centered", False),
            nonlinearity=field("nonlinearity", "swish"),
            sigma_min=field("sigma_min", 0.01),
            sigma_max=field("sigma_max", 50.0),
            num_scales=field("num_scales", 1000),
            num_classes=class_count_from_config(config),
        )
