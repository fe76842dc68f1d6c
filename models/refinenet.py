"""The RefineNet (Lin et al., 2017) score-network family of NCSN (Song & Ermon, 2019) and NCSNv2 (Song & Ermon, 2020).

Building blocks, each keeping the 2021 reference's module and parameter names so that its ``state_dict`` loads
unchanged:

* :func:`ncsn_conv2d`: a convolution with PyTorch's default initialisation times ``init_scale``, padded so
  that a (dilated) convolution keeps the spatial size.
* :class:`ConvMeanPool`: convolution followed by 2x2 mean pooling (the only down-sampling of the family).
* :class:`ResidualBlock`: pre-activation residual block ``shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))``
  (NCSN appendix A.1), optionally down-sampling or dilated.
* :class:`RCUBlock` (residual conv units), :class:`CRPBlock` (chained residual pooling), :class:`MSFBlock`
  (multi-resolution fusion) and :class:`RefineBlock` combining them (RefineNet section 3.1, Fig. 3).
* :class:`RefineNet`: the encoder of residual stages and the cascade of refine blocks shared by NCSN and NCSNv2,
  described by a tuple of :class:`Stage`.

Normalisation layers come from :mod:`models.normalization` and are all called as ``norm(x, labels)``; with
unconditional layers (NCSNv2) the blocks are unconditional, with conditional ones (NCSN) every block depends on
the noise level through its norms. Faithful to the reference (after the repairs listed in the fixtures' README):

* a "down" block with ``dilation > 1`` does not down-sample; only its dilation differs (as in NCSNv2's code);
  every dilated 3x3 convolution is padded by its dilation so the resolution is kept;
* the unconditional chained residual pooling uses 5x5 max pooling, the conditional one 5x5 average pooling
  (padding counted), as NCSNv2 and NCSN do;
* multi-resolution fusion up-samples bilinearly with ``align_corners=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.checks import check_positive_int

from .normalization import NormFactory

ACTIVATIONS = ("elu", "relu", "lrelu", "swish")  # config.model.nonlinearity choices
POOLINGS = ("max", "avg")  # pooling of the chained residual pooling


def get_activation(name: str) -> nn.Module:
    """``config.model.nonlinearity`` (case-insensitive) as a module: ELU, ReLU, LeakyReLU(0.2) or SiLU (swish)."""
    key = name.lower() if isinstance(name, str) else name
    if key == "elu":
        return nn.ELU()
    if key == "relu":
        return nn.ReLU()
    if key == "lrelu":
        return nn.LeakyReLU(negative_slope=0.2)
    if key == "swish":
        return nn.SiLU()
    raise ValueError(f"nonlinearity must be one of {ACTIVATIONS}, got {name!r}")


def ncsn_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    bias: bool = True,
    init_scale: float = 1.0,
) -> nn.Conv2d:
    """Stride-1 convolution padded by ``dilation * (kernel_size // 2)`` (size-preserving), PyTorch's init times
    ``init_scale``.

    As in the reference, ``init_scale = 0`` means 1e-10 (a layer that starts almost silent but can still learn).
    """
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=bias
    )
    scale = 1e-10 if init_scale == 0 else float(init_scale)
    if scale != 1.0:
        with torch.no_grad():
            conv.weight.mul_(scale)
            if conv.bias is not None:
                conv.bias.mul_(scale)
    return conv


class ConvMeanPool(nn.Module):
    """``mean_pool_2x2(conv(x))`` with a size-preserving ``kernel_size`` convolution: halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)  # before pooling

    def forward(self, x: Tensor) -> Tensor:
        if self.conv.kernel_size == (1, 1):  # a 1x1 convolution commutes with mean pooling: pool first, 4x cheaper
            return self.conv(F.avg_pool2d(x, 2))
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """``shortcut(x) + conv2(act(normalize2(conv1(act(normalize1(x))))))`` (NCSN appendix A.1).

    ``down=True`` is the reference's ``resample='down'``: ``conv1`` keeps ``in_channels``, ``conv2`` maps to
    ``out_channels`` and the shortcut is always learned. Without dilation ``conv2`` and the shortcut then end in a
    2x2 mean pool; with ``dilation > 1`` the resolution is kept and all three are dilated 3x3 convolutions.
    Without ``down``, the shortcut is the identity when the channel counts agree, else a (dilated 3x3 or 1x1)
    convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: NormFactory,
        act: nn.Module,
        down: bool = False,
        dilation: int = 1,
    ):
        super().__init__()
        dilation = check_positive_int("dilation", dilation)  # dilation of every 3x3 convolution
        self.downsamples = bool(down) and dilation == 1  # whether the output has half the resolution
        self.act = act  # non-linearity after each normalisation
        mid = in_channels if down else out_channels
        self.conv1 = ncsn_conv2d(in_channels, mid, 3, dilation)  # first convolution
        self.normalize2 = norm(mid)  # normalisation before conv2
        if self.downsamples:
            self.conv2 = ConvMeanPool(mid, out_channels, 3)  # second convolution, then 2x2 mean pool
            self.shortcut = ConvMeanPool(in_channels, out_channels, 1)  # learned skip with the same pooling
        else:
            self.conv2 = ncsn_conv2d(mid, out_channels, 3, dilation)  # second convolution
            learned = down or in_channels != out_channels
            kernel = 3 if dilation > 1 else 1
            self.shortcut = ncsn_conv2d(in_channels, out_channels, kernel, dilation) if learned else None  # skip
        self.normalize1 = norm(in_channels)  # normalisation of the input

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.conv1(self.act(self.normalize1(x, labels)))
        h = self.conv2(self.act(self.normalize2(h, labels)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


class RCUBlock(nn.Module):
    """``n_blocks`` residual conv units ``x + f_n(...f_1(x))`` with ``f_j = conv_j(act(norm_j(.)))`` (RefineNet RCU).

    Layers are named ``{i}_{j}_norm`` / ``{i}_{j}_conv`` (1-based), as in the reference; without ``norm`` there are
    no norm layers.
    """

    def __init__(self, channels: int, n_blocks: int, n_stages: int, act: nn.Module, norm: NormFactory | None = None):
        super().__init__()
        self.act = act  # non-linearity before each convolution
        self.units: list[list[tuple[str | None, str]]] = []  # per unit: (norm name, conv name) per stage
        for i in range(1, check_positive_int("n_blocks", n_blocks) + 1):
            unit = []
            for j in range(1, check_positive_int("n_stages", n_stages) + 1):
                norm_name = f"{i}_{j}_norm" if norm is not None else None
                if norm_name is not None:
                    self.add_module(norm_name, norm(channels))
                self.add_module(f"{i}_{j}_conv", ncsn_conv2d(channels, channels, 3, bias=False))
                unit.append((norm_name, f"{i}_{j}_conv"))
            self.units.append(unit)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        for unit in self.units:
            h = x
            for norm_name, conv_name in unit:
                if norm_name is not None:
                    h = self._modules[norm_name](h, labels)
                h = self._modules[conv_name](self.act(h))
            x = x + h
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: ``x = act(x)``, then ``path = conv_i(pool(norm_i(path)))``, ``x += path`` per stage."""

    def __init__(
        self, channels: int, n_stages: int, act: nn.Module, norm: NormFactory | None = None, pool: str = "max"
    ):
        super().__init__()
        if pool not in POOLINGS:
            raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")
        self.act = act  # non-linearity applied to the input once
        self.pool = pool  # 5x5 stride-1 "max" or "avg" (zero padding counted) pooling
        n_stages = check_positive_int("n_stages", n_stages)
        self.convs = nn.ModuleList(ncsn_conv2d(channels, channels, 3, bias=False) for _ in range(n_stages))  # per stage
        self.norms = nn.ModuleList(norm(channels) for _ in range(n_stages)) if norm is not None else None  # per stage

    def _pool(self, x: Tensor) -> Tensor:
        if self.pool == "max":
            return F.max_pool2d(x, kernel_size=5, stride=1, padding=2)
        return F.avg_pool2d(x, kernel_size=5, stride=1, padding=2)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[i](path, labels)
            path = conv(self._pool(path))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: ``sum_i upsample(conv_i(norm_i(x_i)))`` to the finest input's size."""

    def __init__(self, in_channels: Sequence[int], channels: int, norm: NormFactory | None = None):
        super().__init__()
        self.convs = nn.ModuleList(ncsn_conv2d(c, channels, 3) for c in in_channels)  # one per input, with bias
        self.norms = nn.ModuleList(norm(c) for c in in_channels) if norm is not None else None  # one per input

    def forward(self, xs: Sequence[Tensor], labels: Tensor | None, size: Sequence[int]) -> Tensor:
        total = None
        for i, (conv, x) in enumerate(zip(self.convs, xs)):
            h = conv(self.norms[i](x, labels) if self.norms is not None else x)
            if tuple(h.shape[-2:]) != tuple(size):  # bilinear with align_corners=True is the identity at equal size
                h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=True)
            total = h if total is None else total + h
        return total


class RefineBlock(nn.Module):
    """RefineNet block: RCU-adapt each input, fuse them (MSF), chained residual pooling, output RCUs.

    ``start``: the deepest block, with one input and no fusion; ``end``: the last, with 3 output RCUs instead of 1.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        act: nn.Module,
        norm: NormFactory | None = None,
        start: bool = False,
        end: bool = False,
        pool: str = "max",
    ):
        super().__init__()
        in_channels = [check_positive_int("in_channels", c) for c in in_channels]
        if start != (len(in_channels) == 1):
            raise ValueError(
                f"a RefineBlock has one input iff start=True; got in_channels={in_channels}, start={start}"
            )
        if start and in_channels[0] != channels:
            raise ValueError(f"the start RefineBlock keeps its width: in_channels={in_channels}, channels={channels}")
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act, norm) for c in in_channels)  # per input: 2 RCUs
        self.output_convs = RCUBlock(channels, 3 if end else 1, 2, act, norm)  # after pooling
        self.msf = None if start else MSFBlock(in_channels, channels, norm)  # fusion of the inputs
        self.crp = CRPBlock(channels, 2, act, norm, pool)  # chained residual pooling, 2 stages

    def forward(self, xs: Sequence[Tensor], labels: Tensor | None, size: Sequence[int]) -> Tensor:
        hs = [adapt(x, labels) for adapt, x in zip(self.adapt_convs, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, labels, size)
        return self.output_convs(self.crp(h, labels), labels)


@dataclass(frozen=True)
class Stage:
    """One encoder stage (two residual blocks) and the refine block that decodes it."""

    res_name: str  # the reference's name of the encoder stage, e.g. "res3"
    refine_name: str  # the reference's name of its refine block, e.g. "refine2"
    width: int  # channels as a multiple of nf
    down: bool = False  # the reference's resample='down' on the first block
    dilation: int = 1  # dilation of both blocks (a dilated "down" block keeps the resolution)

    @property
    def downsamples(self) -> bool:
        return self.down and self.dilation == 1


def check_labels(labels: Tensor, batch: int, num_levels: int, name: str = "labels") -> None:
    """``ValueError`` unless ``labels`` is an integer tensor of shape ``(batch,)`` with values in [0, num_levels)."""
    if not isinstance(labels, Tensor) or labels.shape != (batch,):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must have shape (B,) = ({batch},), one per image; got {got}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"{name} must be integer noise-level indices (index 0 = sigma_max, discrete VE), got dtype {labels.dtype}; "
            "this network does not take continuous noise scales"
        )
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= num_levels):
        raise ValueError(
            f"{name} must lie in [0, {num_levels}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


class RefineNet(nn.Module):
    """``begin_conv`` -> residual stages -> refine cascade -> ``normalizer`` -> act -> ``end_conv``.

    ``stages`` run from the finest resolution to the coarsest; refine blocks decode them coarsest first, each fusing
    its stage's features with the previous refine block's output, with the channel count of the next finer stage
    (``nf`` for the finest). Modules are registered in the reference's order (``refine_order``: names of the refine
    blocks in that order, by default the decoding order), so that ``state_dict`` lists its keys in the same order.
    """

    def __init__(
        self,
        num_channels: int,
        image_size: int,
        nf: int,
        stages: Sequence[Stage],
        norm: NormFactory,
        nonlinearity: str,
        centered: bool,
        conditional: bool,
        refine_order: Sequence[str] | None = None,
    ):
        super().__init__()
        self.num_channels = check_positive_int("num_channels", num_channels)  # image channels C
        self.image_size = check_positive_int("image_size", image_size)  # height = width of the inputs
        self.nf = check_positive_int("nf", nf)  # base width; a stage has stage.width * nf channels
        self.centered = bool(centered)  # inputs already in [-1, 1]; otherwise x -> 2 x - 1
        self.stages = tuple(stages)  # encoder stages, finest first
        if not self.stages or self.stages[0].width != 1 or self.stages[0].down:
            raise ValueError("stages must start with a width-1 stage that keeps the resolution")
        self._check_image_size()
        self.act = act = get_activation(nonlinearity)  # non-linearity of every block
        # norm: factory of the residual blocks' and final normalisations; conditional: whether they take the labels,
        # in which case the refine blocks normalise too and pool by averaging (NCSN), else not and by max (NCSNv2)
        refine_norm = norm if conditional else None
        pool = "avg" if conditional else "max"

        self.begin_conv = nn.Conv2d(num_channels, nf, 3, padding=1)
        self.normalizer = norm(nf)
        self.end_conv = nn.Conv2d(nf, num_channels, 3, padding=1)
        in_ch = nf
        for stage in self.stages:
            out_ch = stage.width * nf
            blocks = [
                ResidualBlock(in_ch, out_ch, norm, act, down=stage.down, dilation=stage.dilation),
                ResidualBlock(out_ch, out_ch, norm, act, dilation=stage.dilation),
            ]
            self.add_module(stage.res_name, nn.ModuleList(blocks))
            in_ch = out_ch

        refines: dict[str, RefineBlock] = {}
        widths = [s.width * nf for s in self.stages]
        previous = None
        for k in reversed(range(len(self.stages))):
            inputs = [widths[k]] if previous is None else [widths[k], previous]
            channels = widths[k - 1] if k > 0 else nf
            refines[self.stages[k].refine_name] = RefineBlock(
                inputs, channels, act, refine_norm, start=previous is None, end=k == 0, pool=pool
            )
            previous = channels
        order = list(refines) if refine_order is None else list(refine_order)
        if sorted(order) != sorted(refines):
            raise ValueError(f"refine_order must list the refine blocks {sorted(refines)}, got {order}")
        for name in order:
            self.add_module(name, refines[name])

    #: labels are integer noise-level indices (index 0 = sigma_max): the SMLD networks know their N levels only
    label_kinds = ("index",)

    @property
    def min_image_size(self) -> int:
        """Images must be a multiple of ``2 ** downsamplings`` with at least 2x2 pixels at the coarsest stage."""
        return 2 * self.image_multiple

    @property
    def image_multiple(self) -> int:
        return 2 ** sum(stage.downsamples for stage in self.stages)

    def _check_image_size(self) -> None:
        if self.image_size % self.image_multiple or self.image_size < self.min_image_size:
            raise ValueError(
                f"image_size must be a multiple of {self.image_multiple} and >= {self.min_image_size} for "
                f"{type(self).__name__} (it halves the resolution {self.image_multiple.bit_length() - 1} times and "
                f"instance normalisation needs >= 2x2 pixels), got {self.image_size}"
            )

    def _check_x(self, x: Tensor) -> None:
        expected = (self.num_channels, self.image_size, self.image_size)
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            shape = ", ".join(map(str, expected))
            raise ValueError(f"x must be a floating-point tensor of shape (B, {shape}), got {got}")

    def features(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """``end_conv(act(normalizer(refine cascade(...))))``: the network before any division by sigma."""
        h = self.begin_conv(x if self.centered else 2 * x - 1)
        skips = []
        for stage in self.stages:
            for block in self._modules[stage.res_name]:
                h = block(h, labels)
            skips.append(h)
        out = None
        for stage, skip in zip(reversed(self.stages), reversed(skips)):
            inputs = [skip] if out is None else [skip, out]
            out = self._modules[stage.refine_name](inputs, labels, skip.shape[-2:])
        return self.end_conv(self.act(self.normalizer(out, labels)))
