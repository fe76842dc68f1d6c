"""NCSN++ and DDPM++ ([SDE] appendix H): the U-Net score networks of the 2021 reference's ``models/ncsnpp.py``.

One class, :class:`NCSNpp` (config name ``"ncsnpp"``), covers both families and every option of the reference:

* residual blocks ``resblock_type``: ``"biggan"`` (NCSN++; resampling inside the blocks, optionally FIR) or
  ``"ddpm"`` (DDPM++ style blocks with separate :class:`~models.layers.Upsample` / ``Downsample`` layers);
* progressive growing of the output (``progressive``: ``"none"``, ``"output_skip"``, ``"residual"``) and of the
  input (``progressive_input``: ``"none"``, ``"input_skip"``, ``"residual"``), merged by ``progressive_combine``
  (``"sum"`` | ``"cat"``);
* noise-level embedding ``embedding_type``: random Fourier features of ``log(labels)`` (labels are noise scales
  sigma, VE continuous) or the sinusoidal embedding of the labels (VP/sub-VP ``t * 999``, step indices);
* ``scale_by_sigma`` (divide the output by the noise scale: ``labels`` with Fourier features,
  ``sigmas[labels]`` with the positional embedding), ``skip_rescale``, ``fir``/``fir_kernel``, ``init_scale``,
  ``dropout``, ``conditional``, ``resamp_with_conv``, ``centered`` (inputs in [-1, 1]; otherwise [0, 1],
  mapped to ``2 x - 1``).

Class conditioning (classifier-free guidance, Ho & Salimans, 2022): with ``num_classes = K`` a learned
embedding ``class_embed`` of ``K + 1`` rows (row ``K`` = :attr:`NCSNpp.null_label`, "no label") is added to the noise-level
embedding that every residual block receives, and the network is called ``model(x, labels, class_labels)`` (see
:class:`models.ScoreModel`, :func:`train_lib.get_cfg_loss_fn`). It needs ``conditional=True``.
Without ``num_classes`` (the default) the network, its state dict and its reference key map are those of the reference;
a class-conditional network has no reference counterpart (:meth:`NCSNpp.reference_key_map` raises ``ValueError``).

Signal conditioning (SR3, Saharia et al. 2021, Sec. 2): with a ``condition_map`` (:mod:`models.conditioning`,
``config.model.conditioning``) whose signal has the image's height and width, the signal ``c = condition_map(x0)``
is concatenated to the noisy input on the channels (``in_channels = num_channels + signal channels``, through the
first convolution and the input pyramid), and the network is called ``model(x, labels, c)``. The map holds no
weights, so the state dict differs from the unconditional one by the input convolutions' shapes alone; such a
network has no reference counterpart either. Class labels and a signal together are not supported.

The DDPM network (Ho et al., 2020) is the same U-Net with DDPM blocks and 32 normalisation groups:
:class:`models.ddpm.DDPM` builds it from this class.

Module names are structured (``label_embed.dense_0``, ``down.1.res.0``, ``down.1.downsample``, ``mid.attn``,
``up.3.res.2``, ``conv_out`` ...), and the reference's flat ``all_modules.<i>`` names are mapped onto them by
:meth:`NCSNpp.reference_key_map`, generated while the network is built in the reference's order. Inside every
block the parameter names are the reference's, and tensors keep its layouts. The ``sigmas`` buffer (float64) is
kept so that state dicts match; the forward pass uses the stored buffer.

Speed (``benchmarks/models.py``): the convolution weights are stored channels-last, and the forward pass
converts its input to channels-last, keeps that layout through every block (GroupNorm, FIR resampling, attention,
sums and concatenations all preserve it) and returns the input's layout. ``model.to(memory_format=
torch.contiguous_format)`` switches to the plain layout (the input then stays as it is). In CPU inference the 3x3
convolutions at 8x8 and above run by Winograd's F(4x4, 3x3) (:mod:`models.winograd`: same results up to float32
rounding, ~5e-6 relative). Without autograd, activations run in place; attention is one fused
call on a single head (:func:`models.layers.attention`).

Config (read only by :meth:`NCSNpp.from_config`): ``data.image_size`` and ``model.nf``, ``ch_mult``,
``num_res_blocks``, ``attn_resolutions`` (required); ``data.num_channels`` [3], ``data.centered`` [False] and
``model.*`` with the defaults of the constructor (those of ``configs/ve/cifar10_ncsnpp_continuous``);
``model.class_conditional`` [False]: when True, ``num_classes = data.num_classes`` (then required).
The reference's unused fields ``normalization``, ``attention_type`` and ``conv_size`` are ignored, as there.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from base_lib.config import config_value
from base_lib.checks import check_bool, check_choice, check_finite_positive, check_positive_int

from .embeddings import GaussianFourierProjection, check_image_inputs, sinusoidal_embedding
from .layers import (
    COMBINE_METHODS,
    FIR_KERNEL,
    Combine,
    Downsample,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    SelfAttention,
    Upsample,
    norm_act,
    residual_sum,
    conv3x3,
    dense,
    is_channels_last,
    group_norm,
)
from .conditional_mlp import check_class_labels
from .conditioning import ConditionMap, check_signal, condition_map_from_config
from .ncsnv2 import geometric_sigmas
from .refinenet import get_activation
from .registry import register_model

RESBLOCK_TYPES = ("biggan", "ddpm")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDING_TYPES = ("fourier", "positional")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``check_choice`` on the lower-cased value (config strings are case-insensitive, as in the reference)."""
    return check_choice(name, value.lower() if isinstance(value, str) else value, allowed)


class LabelEmbedding(nn.Module):
    """``labels (B,) -> temb (B, 4 nf)``: Fourier features of ``log(labels)`` or the sinusoidal embedding of the
    labels, then ``dense_1(act(dense_0(.)))`` when the network is ``conditional`` (else ``None``)."""

    def __init__(self, nf: int, embedding_type: str, fourier_scale: float, conditional: bool, act: nn.Module):
        super().__init__()
        self.nf = nf
        self.act = act
        if embedding_type == "fourier":
            self.fourier = GaussianFourierProjection(embedding_size=nf, scale=fourier_scale)  # random features of log sigma
        else:
            self.fourier = None
        embed_dim = 2 * nf if embedding_type == "fourier" else nf
        self.conditional = conditional
        if conditional:
            self.dense_0 = dense(embed_dim, 4 * nf)  # features -> hidden
            self.dense_1 = dense(4 * nf, 4 * nf)  # hidden -> the blocks' embedding

    def forward(self, labels: Tensor, dtype: torch.dtype) -> Tensor | None:
        if not self.conditional:
            return None
        if self.fourier is not None:
            temb = self.fourier(torch.log(labels.to(dtype)))
        else:
            temb = sinusoidal_embedding(labels, self.nf, dtype=dtype)
        return self.dense_1(self.act(self.dense_0(temb)))


class DownLevel(nn.Module):
    """One resolution of the encoder: residual blocks (each followed by attention at attention resolutions), then,
    except at the lowest resolution, down-sampling and the progressive input (``input_skip`` combine or
    ``residual`` down-sampled image pyramid). Every output is pushed on the skip stack."""

    def __init__(
        self,
        res: list[nn.Module],
        attn: list[nn.Module],
        downsample: nn.Module | None,
        input_skip: Combine | None,
        pyramid_downsample: nn.Module | None,
        skip_rescale: bool,
    ):
        super().__init__()
        self.res = nn.ModuleList(res)  # residual blocks
        self.attn = nn.ModuleList(attn)  # self-attention after each block (empty if none at this resolution)
        self.downsample = downsample  # down-sampling residual block (biggan) or Downsample layer (ddpm)
        self.input_skip = input_skip  # Combine of the down-sampled input image (progressive_input='input_skip')
        self.pyramid_downsample = pyramid_downsample  # resampler of the input pyramid ('input_skip' / 'residual')
        self.skip_rescale = skip_rescale

    def forward(self, h: Tensor, temb: Tensor | None, skips: list[Tensor], pyramid: Tensor | None):
        for i, block in enumerate(self.res):
            h = block(h, temb)
            if len(self.attn):
                h = self.attn[i](h)
            skips.append(h)
        if self.downsample is None:
            return h, pyramid
        h = self.downsample(h, temb) if isinstance(self.downsample, ResnetBlockBigGAN) else self.downsample(h)
        if self.input_skip is not None:
            pyramid = self.pyramid_downsample(pyramid)
            h = self.input_skip(pyramid, h)
        elif self.pyramid_downsample is not None:
            pyramid = h = residual_sum(self.pyramid_downsample(pyramid), h, self.skip_rescale)
        skips.append(h)
        return h, pyramid


class MidBlock(nn.Module):
    """The bottleneck: residual block, self-attention, residual block."""

    def __init__(self, res_0: nn.Module, attn: nn.Module, res_1: nn.Module):
        super().__init__()
        self.res_0, self.attn, self.res_1 = res_0, attn, res_1

    def forward(self, h: Tensor, temb: Tensor | None) -> Tensor:
        return self.res_1(self.attn(self.res_0(h, temb)), temb)


class UpLevel(nn.Module):
    """One resolution of the decoder: ``num_res_blocks + 1`` residual blocks on the concatenation with a skip,
    attention at attention resolutions, the progressive output (``output_skip``: image pyramid summed across
    resolutions; ``residual``: feature pyramid), then up-sampling except at the full resolution."""

    def __init__(
        self,
        res: list[nn.Module],
        attn: nn.Module | None,
        progressive: str,
        top: bool,
        pyramid_norm: nn.Module | None,
        pyramid_conv: nn.Module | None,
        pyramid_upsample: nn.Module | None,
        upsample: nn.Module | None,
        act: nn.Module,
        skip_rescale: bool,
    ):
        super().__init__()
        self.res = nn.ModuleList(res)  # residual blocks, input channels = features + skip
        self.attn = attn  # self-attention (None if not an attention resolution)
        self.progressive = progressive
        self.top = top  # lowest resolution: the pyramid starts here
        self.pyramid_norm = pyramid_norm  # GroupNorm before pyramid_conv
        self.pyramid_conv = pyramid_conv  # features -> pyramid (image for output_skip, features for residual top)
        self.pyramid_upsample = pyramid_upsample  # up-sampler of the pyramid from the level below
        self.upsample = upsample  # up-sampling residual block (biggan) or Upsample layer (ddpm)
        self.act = act
        self.skip_rescale = skip_rescale

    def forward(self, h: Tensor, temb: Tensor | None, skips: list[Tensor], pyramid: Tensor | None):
        for block in self.res:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        if self.attn is not None:
            h = self.attn(h)
        if self.progressive == "output_skip":
            image = self.pyramid_conv(norm_act(self.pyramid_norm, self.act, h))
            pyramid = image if self.top else self.pyramid_upsample(pyramid) + image
        elif self.progressive == "residual":
            if self.top:
                pyramid = self.pyramid_conv(norm_act(self.pyramid_norm, self.act, h))
            else:
                pyramid = h = residual_sum(self.pyramid_upsample(pyramid), h, self.skip_rescale)
        if self.upsample is not None:
            h = self.upsample(h, temb) if isinstance(self.upsample, ResnetBlockBigGAN) else self.upsample(h)
        return h, pyramid


def class_count_from_config(config: Any) -> int | None:
    """``config.data.num_classes`` when ``config.model.class_conditional`` [False] is True (it is then required), else
    ``None``: the ``num_classes`` of a class-conditional U-Net."""
    if not check_bool("config.model.class_conditional", config_value(config, "model.class_conditional", False)):
        return None
    num_classes = config_value(config, "data.num_classes", None)
    if num_classes is None:
        raise ValueError("config.model.class_conditional=True needs config.data.num_classes (the number of classes)")
    return num_classes


@register_model(name="ncsnpp")
class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net ``(x (B, C, H, W), labels (B,)) -> (B, C, H, W)``; see the module docstring."""

    def __init__(
        self,
        image_size: int,  # height = width of the inputs
        num_channels: int = 3,  # image channels C
        nf: int = 128,  # base channel count
        ch_mult: Sequence[int] = (1, 2, 2, 2),  # channels nf * m at resolution image_size / 2^level
        num_res_blocks: int = 4,  # residual blocks per resolution (encoder; decoder has one more)
        attn_resolutions: Sequence[int] = (16,),  # resolutions with self-attention
        dropout: float = 0.1,  # dropout inside the residual blocks
        resamp_with_conv: bool = True,  # learned convolutions in the Upsample/Downsample layers (ddpm blocks)
        conditional: bool = True,  # condition on the noise level
        fir: bool = True,  # FIR resampling (else nearest-neighbour / average pooling)
        fir_kernel: Sequence[float] = FIR_KERNEL,  # 1-D taps of the FIR filter
        skip_rescale: bool = True,  # residual sums divided by sqrt(2)
        resblock_type: str = "biggan",  # "biggan" | "ddpm"
        progressive: str = "none",  # output pyramid: "none" | "output_skip" | "residual"
        progressive_input: str = "residual",  # input pyramid: "none" | "input_skip" | "residual"
        progressive_combine: str = "sum",  # input_skip merge: "sum" | "cat"
        embedding_type: str = "fourier",  # "fourier" (of log sigma) | "positional" (sinusoidal)
        fourier_scale: float = 16.0,  # std of the random Fourier frequencies
        init_scale: float = 0.0,  # init scale of each branch's last layer (0 means 1e-10)
        scale_by_sigma: bool = True,  # divide the output by the noise scale
        centered: bool = False,  # inputs in [-1, 1] (else [0, 1], mapped to 2x - 1)
        nonlinearity: str = "swish",  # "swish" | "elu" | "relu" | "lrelu"
        sigma_min: float = 0.01,  # the sigmas buffer: smallest noise scale
        sigma_max: float = 50.0,  # largest noise scale
        num_scales: int = 1000,  # number of noise scales
        norm_groups: int | None = None,  # GroupNorm groups of blocks and output (None: min(C // 4, 32); DDPM: 32)
        num_classes: int | None = None,  # class labels 0..K-1 plus the null label K (classifier-free guidance); None: none
        condition_map: ConditionMap | None = None,  # signal concatenated to the input (SR3); None: unconditional
    ):
        super().__init__()
        self.image_size = check_positive_int("image_size", image_size)
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.nf = nf = check_positive_int("nf", nf)
        ch_mult = tuple(check_positive_int("ch_mult", m) for m in ch_mult)
        if not ch_mult:
            raise ValueError("ch_mult must list at least one channel multiplier")
        self.num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.resblock_type = _choice("resblock_type", resblock_type, RESBLOCK_TYPES)
        self.progressive = _choice("progressive", progressive, PROGRESSIVE)
        self.progressive_input = _choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        combine = _choice("progressive_combine", progressive_combine, COMBINE_METHODS)
        self.embedding_type = _choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        self.conditional = bool(conditional)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.centered = bool(centered)
        self.skip_rescale = bool(skip_rescale)
        num_levels = len(ch_mult)
        if self.image_size % 2 ** (num_levels - 1):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2^(len(ch_mult) - 1) = {2 ** (num_levels - 1)}"
            )
        if self.embedding_type == "positional" and nf < 4:
            raise ValueError(f"the positional embedding needs nf >= 4, got {nf}")
        if self.embedding_type == "fourier":
            check_finite_positive("fourier_scale", fourier_scale)
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"num_classes must be None or an integer >= 1, got {num_classes!r}")
            if not self.conditional:
                raise ValueError("num_classes needs conditional=True: the class embedding is added to the label embedding")
        self.num_classes = num_classes
        self.signal_channels = self._signal_channels(condition_map)  # channels of the signal c (0: none)
        in_channels = self.num_channels + self.signal_channels  # the noisy image and the signal, concatenated
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, check_positive_int("num_scales", num_scales)))
        self.act = act = get_activation(nonlinearity)

        order: list[nn.Module] = []  # modules in the order of the reference's all_modules

        def track(module: nn.Module) -> nn.Module:
            order.append(module)
            return module

        temb_dim = 4 * nf

        def res_block(in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False) -> nn.Module:
            common = dict(act=act, in_ch=in_ch, out_ch=out_ch, temb_dim=temb_dim, dropout=dropout,
                          skip_rescale=self.skip_rescale, init_scale=init_scale, groups=norm_groups)
            if self.resblock_type == "ddpm":
                return track(ResnetBlockDDPM(**common))
            return track(ResnetBlockBigGAN(up=up, down=down, fir=fir, fir_kernel=fir_kernel, **common))

        def attention(channels: int) -> nn.Module:
            return track(SelfAttention(channels, skip_rescale=self.skip_rescale, init_scale=init_scale, groups=norm_groups))

        # label embedding
        self.label_embed = LabelEmbedding(nf, self.embedding_type, fourier_scale, self.conditional, act)
        for name in ("fourier", "dense_0", "dense_1"):
            if getattr(self.label_embed, name, None) is not None:
                track(getattr(self.label_embed, name))

        # encoder
        resolutions = [self.image_size // 2**i for i in range(num_levels)]
        self.conv_in = track(conv3x3(in_channels, nf))  # image (and signal) -> features
        skip_channels = [nf]
        in_ch, pyramid_ch = nf, in_channels
        down_levels = []
        for level, mult in enumerate(ch_mult):
            res, attn = [], []
            for _ in range(self.num_res_blocks):
                res.append(res_block(in_ch, nf * mult))
                in_ch = nf * mult
                if resolutions[level] in self.attn_resolutions:
                    attn.append(attention(in_ch))
                skip_channels.append(in_ch)
            downsample = input_skip = pyramid_downsample = None
            if level != num_levels - 1:
                if self.resblock_type == "ddpm":
                    downsample = track(Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    downsample = res_block(in_ch, down=True)
                if self.progressive_input == "input_skip":
                    pyramid_downsample = Downsample(pyramid_ch, with_conv=False, fir=fir, fir_kernel=fir_kernel)
                    input_skip = track(Combine(pyramid_ch, in_ch, method=combine))
                    in_ch = 2 * in_ch if combine == "cat" else in_ch
                elif self.progressive_input == "residual":
                    pyramid_downsample = track(
                        Downsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)
                    )
                    pyramid_ch = in_ch
                skip_channels.append(in_ch)
            down_levels.append(DownLevel(res, attn, downsample, input_skip, pyramid_downsample, self.skip_rescale))
        self.down = nn.ModuleList(down_levels)  # encoder levels, full resolution first

        in_ch = skip_channels[-1]
        self.mid = MidBlock(res_block(in_ch), attention(in_ch), res_block(in_ch))  # bottleneck

        # decoder, built from the lowest resolution up; self.up[level] serves resolutions[level]
        up_levels: list[UpLevel | None] = [None] * num_levels
        pyramid_ch = 0
        for level in reversed(range(num_levels)):
            res = []
            for _ in range(self.num_res_blocks + 1):
                res.append(res_block(in_ch + skip_channels.pop(), nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
            attn = attention(in_ch) if resolutions[level] in self.attn_resolutions else None
            top = level == num_levels - 1
            pyramid_norm = pyramid_conv = pyramid_upsample = None
            if self.progressive == "output_skip":
                pyramid_norm = track(group_norm(in_ch))
                pyramid_conv = track(conv3x3(in_ch, self.num_channels, init_scale=init_scale))
                if not top:
                    pyramid_upsample = Upsample(self.num_channels, with_conv=False, fir=fir, fir_kernel=fir_kernel)
            elif self.progressive == "residual":
                if top:
                    pyramid_norm = track(group_norm(in_ch))
                    pyramid_conv = track(conv3x3(in_ch, in_ch))
                else:
                    pyramid_upsample = track(Upsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                pyramid_ch = in_ch
            upsample = None
            if level != 0:
                if self.resblock_type == "ddpm":
                    upsample = track(Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    upsample = res_block(in_ch, up=True)
            up_levels[level] = UpLevel(
                res, attn, self.progressive, top, pyramid_norm, pyramid_conv, pyramid_upsample, upsample, act,
                self.skip_rescale,
            )
        assert not skip_channels
        self.up = nn.ModuleList(up_levels)  # decoder levels, indexed like self.down (run in reverse)

        if self.progressive != "output_skip":
            self.norm_out = track(group_norm(in_ch, norm_groups))  # final normalisation
            self.conv_out = track(conv3x3(in_ch, self.num_channels, init_scale=init_scale))  # features -> output

        if num_classes is not None:
            # class-conditional (classifier-free guidance): created last, so that the other weights are initialised
            # exactly as in the unconditional network of the same seed; no counterpart in the reference
            self.class_embed = nn.Embedding(num_classes + 1, temb_dim)  # class (row K: the null label) -> temb shift

        if condition_map is not None:
            self.condition_map = condition_map  # the fixed map x0 -> c; no parameters, so no state_dict entries
        names = {id(module): name for name, module in self.named_modules()}
        self._reference_prefixes = {f"all_modules.{i}": names[id(module)] for i, module in enumerate(order)}
        # convolution weights channels-last: the forward pass then runs channels-last (see forward)
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, config: Any) -> "NCSNpp":
        """Build from ``config.data`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default=...: config_value(config, f"model.{name}", default)  # noqa: E731
        embedding_type = field("embedding_type", "fourier")
        num_classes = class_count_from_config(config)
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
            fir=field("fir", True),
            fir_kernel=field("fir_kernel", FIR_KERNEL),
            skip_rescale=field("skip_rescale", True),
            resblock_type=field("resblock_type", "biggan"),
            progressive=field("progressive", "none"),
            progressive_input=field("progressive_input", "residual"),
            progressive_combine=field("progressive_combine", "sum"),
            embedding_type=embedding_type,
            fourier_scale=field("fourier_scale", 16.0),
            init_scale=field("init_scale", 0.0),
            scale_by_sigma=field("scale_by_sigma", True),
            centered=config_value(config, "data.centered", False),
            nonlinearity=field("nonlinearity", "swish"),
            sigma_min=field("sigma_min", 0.01),
            sigma_max=field("sigma_max", 50.0),
            num_scales=field("num_scales", 1000),
            num_classes=num_classes,
            condition_map=condition_map_from_config(config),
        )

    def _signal_channels(self, condition_map: ConditionMap | None) -> int:
        """The channel count of ``condition_map``'s signal, checked to be an image of the network's size."""
        if condition_map is None:
            return 0
        if not isinstance(condition_map, ConditionMap):
            raise ValueError(f"condition_map must be a models.ConditionMap or None, got {type(condition_map).__name__}")
        if self.num_classes is not None:
            raise ValueError("num_classes and condition_map together are not supported: give a class or a signal")
        size = self.image_size
        shape = tuple(condition_map.signal_shape((self.num_channels, size, size)))
        if len(shape) != 3 or shape[1:] != (size, size):
            raise ValueError(
                f"condition_map {type(condition_map).__name__}: NCSNpp takes a signal of shape (S, {size}, {size}) to "
                f"concatenate to the input, got {shape}"
            )
        return shape[0]

    @property
    def label_kinds(self) -> tuple[str, ...] | None:
        """``("sigma",)`` with the Fourier embedding of ``log sigma`` (labels must be noise scales); ``None`` (any
        label) with the positional one (:class:`models.Parameterization`)."""
        return ("sigma",) if self.embedding_type == "fourier" else None

    @property
    def null_label(self) -> int | None:
        """The class label standing for "no label" (the unconditional score), ``num_classes``; ``None`` when the
        network is not class-conditional."""
        return self.num_classes

    def reference_key_map(self) -> dict[str, str]:
        """Reference module prefix (``all_modules.<i>``) -> the prefix of the same module here.

        A class-conditional network (``num_classes`` set) has no counterpart in the reference: ``ValueError``.
        """
        if self.signal_channels:
            raise ValueError(
                f"a signal-conditioned {type(self).__name__} ({self.condition_map.name}) has no counterpart in the 2021 "
                "reference: its input convolutions take the signal's channels too"
            )
        if self.num_classes is not None:
            raise ValueError(
                f"a class-conditional {type(self).__name__} (num_classes={self.num_classes}) has no counterpart in the "
                "2021 reference: its class embedding cannot be loaded from or saved to a reference state_dict"
            )
        return dict(self._reference_prefixes)

    def _check_inputs(self, x: Tensor, labels: Tensor) -> None:
        check_image_inputs(x, labels, self.image_size, self.num_channels, self.conv_in.weight.dtype, self.embedding_type)

    def _class_shift(self, class_labels: Tensor | int | None, batch: int, device: torch.device) -> Tensor | None:
        """The class embedding ``(B, 4 nf)`` of ``class_labels`` (``None``: the null label), or ``None`` when the
        network is unconditional (then ``class_labels`` must be ``None``)."""
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError(f"class_labels given to an unconditional {type(self).__name__}: build it with num_classes")
            return None
        return self.class_embed(check_class_labels(class_labels, batch, self.num_classes, device))

    def forward(self, x: Tensor, labels: Tensor, class_labels: Tensor | int | None = None) -> Tensor:
        """``labels``: the noise-level labels (module docstring); ``class_labels`` (class-conditional networks only):
        ``(B,)`` integers or one integer in ``[0, num_classes]`` (``num_classes`` = null), ``None`` = the null label.
        A signal-conditioned network takes its signal ``c = condition_map(x0)`` ``(B, S, H, W)`` in this place."""
        self._check_inputs(x, labels)
        signal = None
        if self.signal_channels:
            signal, class_labels = check_signal(class_labels, x, self.condition_map, name="c").to(x.dtype), None
        class_shift = self._class_shift(class_labels, x.shape[0], x.device)
        input_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        if is_channels_last(self.conv_in.weight):
            x = x.contiguous(memory_format=torch.channels_last)
        temb = self.label_embed(labels, x.dtype)
        if class_shift is not None:
            temb = temb + class_shift
        if signal is not None:
            x = torch.cat([x, signal], dim=1)
            if is_channels_last(self.conv_in.weight):
                x = x.contiguous(memory_format=torch.channels_last)
        if not self.centered:
            x = 2 * x - 1.0  # the signal is in the data's space too
        pyramid = x if self.progressive_input != "none" else None
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            h, pyramid = level(h, temb, skips, pyramid)
        h = self.mid(h, temb)
        pyramid = None
        for level in reversed(self.up):
            h, pyramid = level(h, temb, skips, pyramid)
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self.conv_out(norm_act(self.norm_out, self.act, h))
        if self.scale_by_sigma:
            sigma = labels if self.embedding_type == "fourier" else self.sigmas[labels.long()]
            h = h / sigma.to(h.dtype).reshape(-1, 1, 1, 1)
        return h.contiguous(memory_format=input_format)
