"""A noise-conditional image classifier: ``classifier(x(t) (B, C, H, W), t (B,)) -> (B, K)`` logits of ``p_t(y | x(t))``.

The classifier of classifier guidance ([SDE] = Song et al., ICLR 2021, section 5 and appendix I.1: ``grad_x log
p_t(y | x(t))`` is added to the score, eq. (14)) for images. As :class:`models.MLPClassifier` it is conditioned on
the SDE time ``t`` itself (the sinusoidal embedding of ``t * time_scale`` through a two-layer MLP), not on the network
labels of :mod:`models.score_model`, so one classifier serves every sampler of its SDE.

The trunk is the encoder half of DDPM++ ([SDE] appendix H; :mod:`models.ncsnpp` with ``resblock_type="ddpm"``): a
3x3 input convolution, then per resolution ``num_res_blocks`` DDPM residual blocks
(:class:`models.layers.ResnetBlockDDPM`, the time embedding added in every block), optional self-attention after each
block at ``attn_resolutions``, and a :class:`models.layers.Downsample` between resolutions (the levels are
:class:`models.ncsnpp.DownLevel`). The head is that of ADM's classifier (Dhariwal & Nichol, 2021, "EncoderUNet"
with average pooling): GroupNorm, activation, global average pooling over the pixels, a linear map to ``K`` logits.
The input ``x(t)`` is used as it is (no ``2 x - 1`` mapping: noisy data has no fixed range).

As in :class:`models.NCSNpp`, the convolution weights are stored channels-last and the blocks keep that layout; in
CPU float32 inference the 3x3 convolutions may run by Winograd's F(4x4, 3x3) (:mod:`models.winograd`). Gradients
with respect to ``x`` (guided sampling) always use the direct convolution: :func:`models.winograd.winograd_applies`
excludes any input that requires grad.

Config (read only by :meth:`ConvClassifier.from_config`; defaults in brackets): ``config.data.image_size`` and
``config.data.num_classes`` (required), ``config.data.num_channels`` [3]; ``config.model.name = "conv_classifier"``,
``nf`` [128], ``ch_mult`` [(1, 2, 2, 2)], ``num_res_blocks`` [2], ``attn_resolutions`` [(16,)], ``dropout`` [0.1],
``resamp_with_conv`` [True], ``fir`` [False], ``fir_kernel`` [(1, 3, 3, 1)], ``skip_rescale`` [True], ``init_scale``
[0], ``nonlinearity`` ["swish"], ``time_scale`` [999], ``embedding_dim`` [``nf``].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from base_lib.config import config_value
from base_lib.checks import check_finite_positive, check_positive_int

from .embeddings import sinusoidal_embedding
from .layers import (FIR_KERNEL, Downsample, ResnetBlockDDPM, SelfAttention, dense, group_norm, is_channels_last,
                     norm_act, conv3x3)
from .ncsnpp import DownLevel
from .refinenet import get_activation
from .registry import register_model


@register_model(name="conv_classifier")
class ConvClassifier(nn.Module):
    """DDPM++ encoder ``(x (B, C, H, W), t (B,)) -> logits (B, K)``, time-conditioned by the embedding of ``t * time_scale``."""

    def __init__(
        self,
        image_size: int,  # height = width of the inputs
        num_classes: int,  # number K >= 2 of classes: outputs are (B, K)
        num_channels: int = 3,  # image channels C
        nf: int = 128,  # base channel count
        ch_mult: Sequence[int] = (1, 2, 2, 2),  # channels nf * m at resolution image_size / 2^level
        num_res_blocks: int = 2,  # residual blocks per resolution
        attn_resolutions: Sequence[int] = (16,),  # resolutions with self-attention (each must occur)
        dropout: float = 0.1,  # dropout inside the residual blocks
        resamp_with_conv: bool = True,  # down-sample by a learned convolution (else by pooling / FIR)
        fir: bool = False,  # FIR down-sampling (else stride-2 convolution / average pooling)
        fir_kernel: Sequence[float] = FIR_KERNEL,  # 1-D taps of the FIR filter
        skip_rescale: bool = True,  # residual sums divided by sqrt(2) (DDPM++)
        init_scale: float = 0.0,  # init scale of each branch's last layer (0 means 1e-10)
        nonlinearity: str = "swish",  # "swish" | "elu" | "relu" | "lrelu"
        time_scale: float = 999.0,  # t is embedded as t * time_scale (VP's 999)
        embedding_dim: int | None = None,  # sinusoidal features of the time [nf]
        max_positions: int = 10000,  # longest period of the sinusoids
        norm_groups: int | None = None,  # GroupNorm groups (None: min(C // 4, 32))
    ):
        super().__init__()
        self.image_size = check_positive_int("image_size", image_size)
        self.num_classes = check_positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_channels = check_positive_int("num_channels", num_channels)
        nf = check_positive_int("nf", nf)
        if isinstance(ch_mult, (str, bytes)) or not isinstance(ch_mult, Sequence) or not ch_mult:
            raise ValueError(f"ch_mult must be a non-empty sequence of positive integers, got {ch_mult!r}")
        ch_mult = tuple(check_positive_int("ch_mult", m) for m in ch_mult)
        num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
        num_levels = len(ch_mult)
        if self.image_size % 2 ** (num_levels - 1):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2^(len(ch_mult) - 1) = {2 ** (num_levels - 1)}"
            )
        resolutions = [self.image_size // 2**level for level in range(num_levels)]
        attn_resolutions = tuple(check_positive_int("attn_resolutions", r) for r in attn_resolutions)
        if not set(attn_resolutions) <= set(resolutions):
            raise ValueError(f"attn_resolutions must be among the network's resolutions {resolutions}, got {attn_resolutions}")
        if isinstance(dropout, bool) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.time_scale = check_finite_positive("time_scale", time_scale)
        embedding_dim = nf if embedding_dim is None else embedding_dim
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if self.embedding_dim < 4:
            raise ValueError(f"embedding_dim must be >= 4, got {self.embedding_dim}")
        self.max_positions = check_positive_int("max_positions", max_positions)
        self.act = act = get_activation(nonlinearity)
        temb_dim = 4 * nf

        self.time_embed = nn.Sequential(dense(self.embedding_dim, temb_dim), act, dense(temb_dim, temb_dim))  # t features -> temb
        self.conv_in = conv3x3(self.num_channels, nf)  # image -> features
        levels, in_ch = [], nf
        for level, mult in enumerate(ch_mult):
            res, attn = [], []
            for _ in range(num_res_blocks):
                res.append(ResnetBlockDDPM(act, in_ch, nf * mult, temb_dim=temb_dim, dropout=float(dropout),
                                           skip_rescale=bool(skip_rescale), init_scale=init_scale, groups=norm_groups))
                in_ch = nf * mult
                if resolutions[level] in attn_resolutions:
                    attn.append(SelfAttention(in_ch, skip_rescale=bool(skip_rescale), init_scale=init_scale, groups=norm_groups))
            downsample = None
            if level != num_levels - 1:
                downsample = Downsample(in_ch, with_conv=bool(resamp_with_conv), fir=bool(fir), fir_kernel=fir_kernel)
            levels.append(DownLevel(res, attn, downsample, None, None, bool(skip_rescale)))
        self.down = nn.ModuleList(levels)  # encoder levels, full resolution first
        self.norm_out = group_norm(in_ch, norm_groups)  # normalisation before pooling
        self.head = dense(in_ch, self.num_classes)  # pooled features -> class logits
        # convolution weights channels-last, as NCSNpp: the forward pass then runs channels-last
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, config: Any) -> "ConvClassifier":
        """Build from ``config.data`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default: config_value(config, f"model.{name}", default)  # noqa: E731
        return cls(
            image_size=config_value(config, "data.image_size"),
            num_classes=config_value(config, "data.num_classes"),
            num_channels=config_value(config, "data.num_channels", 3),
            nf=field("nf", 128),
            ch_mult=field("ch_mult", (1, 2, 2, 2)),
            num_res_blocks=field("num_res_blocks", 2),
            attn_resolutions=field("attn_resolutions", (16,)),
            dropout=field("dropout", 0.1),
            resamp_with_conv=field("resamp_with_conv", True),
            fir=field("fir", False),
            fir_kernel=field("fir_kernel", FIR_KERNEL),
            skip_rescale=field("skip_rescale", True),
            init_scale=field("init_scale", 0.0),
            nonlinearity=field("nonlinearity", "swish"),
            time_scale=field("time_scale", 999.0),
            embedding_dim=field("embedding_dim", None),
        )

    def _check_inputs(self, x: Tensor, t: Tensor) -> None:
        size, channels = self.image_size, self.num_channels
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1:] != (channels, size, size) or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a floating-point tensor of shape (B, {channels}, {size}, {size}) (num_channels, image_size), got {got}"
            )
        if not isinstance(t, Tensor) or t.shape != (x.shape[0],) or not t.is_floating_point():
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a floating-point tensor of shape (B,) = ({x.shape[0]},), got {got}")

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self._check_inputs(x, t)
        dtype = self.conv_in.weight.dtype
        x = x.to(dtype)
        if is_channels_last(self.conv_in.weight):
            x = x.contiguous(memory_format=torch.channels_last)
        temb = self.time_embed(sinusoidal_embedding(t * self.time_scale, self.embedding_dim, self.max_positions, dtype))
        h = self.conv_in(x)
        for level in self.down:
            h, _ = level(h, temb, [], None)
        h = norm_act(self.norm_out, self.act, h).mean(dim=(2, 3))  # global average pooling
        return self.head(h)
