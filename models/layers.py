"""Building blocks shared by the DDPM (Ho et al., 2020) and NCSN++ / DDPM++ ([SDE] appendix H) U-Nets.

Parameter names inside every block are those of the 2021 reference (``GroupNorm_0``, ``Conv_0``, ``Dense_0``,
``NIN_0``, ``Conv2d_0`` ...), and tensors keep its layouts (``NIN.W`` is ``(in, out)``), so a reference
``state_dict`` loads block by block with a renaming of module prefixes only.

* :func:`ddpm_init_`: DDPM's variance-scaling initialisation (uniform, ``fan_avg``); :func:`conv3x3` (a
  :class:`~models.winograd.WinogradConv2d` when stride 1, padding 1), :func:`conv1x1`, :func:`dense` and :class:`NIN`
  use it.
* :class:`ResnetBlockDDPM`: the residual block of DDPM and of DDPM++ (``resblock_type='ddpm'``).
* :class:`ResnetBlockBigGAN`: the BigGAN-style residual block of NCSN++ with optional FIR or naive up/down-sampling.
* :class:`SelfAttention`: DDPM's single-head self-attention over pixels; :func:`attention`, the attention product
  it and the DiT's heads share.
* :class:`Upsample`, :class:`Downsample`: factor-2 resampling, FIR or not, with or without a convolution.
* :class:`ResampleConv2d`: a convolution fused with FIR up- or down-sampling (StyleGAN2's ``Conv2d``).
* :class:`Combine`: merges a progressive-growing input into the feature maps (sum or concatenation).

Layout and in-place work: every block keeps a channels-last input channels-last; :func:`norm_act` runs the activation
in place when autograd is off, and :func:`residual_sum_` / :func:`add_label_shift_` write into a convolution's fresh
output (safe under autograd too: neither operation needs its input for the backward pass).

Group normalisation: the reference's DDPM uses 32 groups everywhere, NCSN++ uses ``min(C // 4, 32)``; blocks take
``groups=None`` for the NCSN++ rule or a fixed count.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .upfirdn2d import conv_downsample_2d, downsample_2d, fir_kernel_2d, upsample_2d, upsample_conv_2d
from .winograd import WinogradConv2d

SQRT2 = math.sqrt(2.0)  # the residual rescaling (x + h) / sqrt(2) of skip_rescale
FIR_KERNEL = (1, 3, 3, 1)  # NCSN++'s default FIR taps
COMBINE_METHODS = ("sum", "cat")


def ddpm_init_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """Fill ``weight`` in place with ``U(-b, b)``, ``b = sqrt(3 scale / fan_avg)``: variance ``scale / fan_avg``.

    ``fan_avg = (fan_in + fan_out) / 2`` with fans taken as JAX's ``variance_scaling`` does for the shape
    ``(out, in, *receptive)``: ``fan_in = shape[1] * receptive``, ``fan_out = shape[0] * receptive`` (for
    ``NIN.W (in, out)`` the two are swapped, which ``fan_avg`` does not see). ``scale = 0`` means ``1e-10``, as
    in DDPM, so that a "zero-initialised" layer still passes gradients to the layers before it.
    """
    scale = 1e-10 if scale == 0 else float(scale)
    receptive = math.prod(weight.shape[2:])
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv3x3(
    in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0, padding: int = 1
) -> nn.Conv2d:
    """3x3 convolution with :func:`ddpm_init_` weights (variance ``init_scale / fan_avg``) and zero bias; the common
    stride-1, padding-1 case is a :class:`~models.winograd.WinogradConv2d` (fast on the CPU in inference)."""
    if stride == 1 and padding == 1:
        conv: nn.Conv2d = WinogradConv2d(in_ch, out_ch, bias=bias)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding, bias=bias)
    ddpm_init_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, bias: bool = True, init_scale: float = 1.0) -> nn.Conv2d:
    """1x1 convolution with :func:`ddpm_init_` weights and zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=bias)
    ddpm_init_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def dense(in_features: int, out_features: int) -> nn.Linear:
    """Linear layer with :func:`ddpm_init_` weights and zero bias."""
    linear = nn.Linear(in_features, out_features)
    ddpm_init_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def is_channels_last(t: Tensor) -> bool:
    """Whether a 4-D tensor is stored channels-last (and not also plainly contiguous, as with one channel)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (the same parameters and state dict, the same results to rounding) that steps around a slow
    CPU kernel.

    torch's CPU kernel for a channels-last bf16/fp16 input is several times slower than the plain-layout kernel when
    an example has fewer than ``2**17`` elements (``C H W``: 16x16 maps and below at 128-256 channels), and fast
    from there on, where converting the layout costs more than it saves (torch 2.13; figures in
    ``benchmarks/results/precision_cpu.txt``). Below that size the input is normalised in the plain layout and the
    result returned channels-last, as the blocks expect. Other devices, dtypes and layouts take the module as it is.
    """

    SLOW_CHANNELS_LAST_BELOW = 2**17  # elements per example under which the reduced-precision channels-last kernel is slow

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and x.ndim == 4
                and x[0].numel() < self.SLOW_CHANNELS_LAST_BELOW and is_channels_last(x)):
            y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


SLOW_CPU_ATTENTION_BACKWARD_BELOW = 256  # tokens under which torch's bf16/fp16 CPU attention backward is slow


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``(B, heads, N, d)`` queries, keys and values
    (``F.scaled_dot_product_attention``, autocast as usual), stepping around a slow CPU kernel.

    On the CPU, torch's bf16/fp16 attention backward is several times slower than the float32 one for fewer than 256
    tokens (the 16 of an 8x8 digit, the 169 of a 26x26 face in 2x2 patches) and as fast or faster from 256 on; its
    forward is about as fast as float32's (torch 2.13; figures in ``benchmarks/results/precision_cpu.txt``). So
    when autograd records a reduced-precision attention of fewer tokens on the CPU, the product is taken in float32
    and the result returned in the reduced dtype, as the blocks expect. Everything else takes the fused call as it
    is.
    """
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    if (q.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
            and q.shape[-2] < SLOW_CPU_ATTENTION_BACKWARD_BELOW and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the float32 inputs back down
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(dtype)
    return F.scaled_dot_product_attention(q, k, v)


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm with ``eps = 1e-6`` over ``channels``: ``groups`` groups, or ``min(channels // 4, 32)`` if ``None``."""
    num_groups = min(channels // 4, 32) if groups is None else groups
    if num_groups < 1 or channels % num_groups:
        rule = "min(C // 4, 32)" if groups is None else f"{groups}"
        raise ValueError(
            f"a GroupNorm with {rule} groups cannot normalise {channels} channels: choose nf and ch_mult so that every "
            f"channel count is a multiple of the group count"
        )
    return GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6)


class NIN(nn.Module):
    """Per-pixel linear map over channels ("network in network", a 1x1 convolution): ``y = W^T x + b``.

    ``W`` is stored ``(in, out)`` as in the reference (and in DDPM's TensorFlow code).
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(ddpm_init_(torch.empty(in_dim, num_units), init_scale))  # (in, out) weights
        self.b = nn.Parameter(torch.zeros(num_units))  # bias

    def forward(self, x: Tensor) -> Tensor:
        # one matrix product over the pixels in channels-last order (a view when x is channels-last)
        batch, channels, height, width = x.shape
        y = torch.addmm(self.b, x.permute(0, 2, 3, 1).reshape(-1, channels), self.W)
        return y.view(batch, height, width, -1).permute(0, 3, 1, 2)


def residual_sum(x: Tensor, h: Tensor, skip_rescale: bool) -> Tensor:
    """``x + h``, divided by sqrt(2) with ``skip_rescale`` to keep the variance of a sum of two unit-variance paths."""
    return (x + h) / SQRT2 if skip_rescale else x + h


def residual_sum_(x: Tensor, h: Tensor, skip_rescale: bool) -> Tensor:
    """:func:`residual_sum` written into ``h``, a branch output that nothing else holds (autograd-safe: neither the
    sum nor the division needs its input for the backward pass)."""
    h = h.add_(x)
    return h.div_(SQRT2) if skip_rescale else h


def add_label_shift_(h: Tensor, shift: Tensor) -> Tensor:
    """``h + shift[:, :, None, None]`` written into ``h`` (a convolution's output): the per-channel label embedding."""
    return h.add_(shift[:, :, None, None])


def norm_act(norm: nn.Module, act: nn.Module, x: Tensor) -> Tensor:
    """``act(norm(x))``; without autograd the activation runs in place on the normalised tensor (one buffer less)."""
    h = norm(x)
    if torch.is_grad_enabled():
        return act(h)
    if isinstance(act, nn.SiLU):
        return F.silu(h, inplace=True)
    if isinstance(act, nn.ReLU):
        return F.relu_(h)
    if isinstance(act, nn.LeakyReLU):
        return F.leaky_relu_(h, act.negative_slope)
    if isinstance(act, nn.ELU):
        return F.elu_(h, act.alpha)
    return act(h)


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block (Ho et al., 2020, appendix B; DDPM++ [SDE] H.1 adds ``skip_rescale``):

    ``h = Conv_1(Dropout(act(GN_1(Conv_0(act(GN_0(x))) + Dense_0(act(temb))))))``, output ``shortcut(x) + h``
    (divided by sqrt(2) with ``skip_rescale``). The shortcut is the identity, or ``NIN_0`` / ``Conv_2`` (3x3) when
    the channel count changes.
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.1,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
        groups: int | None = None,
    ):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.act = act  # nonlinearity
        self.GroupNorm_0 = group_norm(in_ch, groups)  # input normalisation
        self.Conv_0 = conv3x3(in_ch, out_ch)  # first convolution
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)  # label embedding -> per-channel shift
        self.GroupNorm_1 = group_norm(out_ch, groups)  # normalisation after the shift
        self.Dropout_0 = nn.Dropout(dropout)  # dropout before the second convolution
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)  # second convolution (near zero at init)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)  # 3x3 shortcut projection
            else:
                self.NIN_0 = NIN(in_ch, out_ch)  # 1x1 shortcut projection
        self.skip_rescale = skip_rescale  # divide the residual sum by sqrt(2)
        self.out_ch = out_ch

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(norm_act(self.GroupNorm_0, self.act, x))
        if temb is not None:
            h = add_label_shift_(h, self.Dense_0(self.act(temb)))
        h = self.Conv_1(self.Dropout_0(norm_act(self.GroupNorm_1, self.act, h)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        elif hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return residual_sum_(x, h, self.skip_rescale)


class _FIRResampler(nn.Module):
    """Holds the normalised FIR kernel as a non-persistent buffer (follows ``.to()``, not in the state dict)."""

    def _set_fir(self, fir: bool, fir_kernel: Sequence[float]) -> None:
        self.fir = bool(fir)  # FIR resampling (True) or nearest / average pooling (False)
        self.fir_kernel = tuple(fir_kernel)  # the 1-D taps
        if self.fir:
            self.register_buffer("resample_kernel", fir_kernel_2d(self.fir_kernel), persistent=False)

    def _up(self, x: Tensor) -> Tensor:
        return upsample_2d(x, self.resample_kernel, factor=2) if self.fir else F.interpolate(x, scale_factor=2.0, mode="nearest")

    def _down(self, x: Tensor) -> Tensor:
        return downsample_2d(x, self.resample_kernel, factor=2) if self.fir else F.avg_pool2d(x, 2, stride=2)


class ResnetBlockBigGAN(_FIRResampler):
    """NCSN++'s BigGAN-type residual block ([SDE] appendix H.1; Brock et al., 2019) with optional resampling.

    ``h = act(GN_0(x))``; with ``up``/``down`` both ``h`` and the shortcut input ``x`` are resampled by 2 (FIR, or
    nearest-neighbour / average pooling); then ``h = Conv_1(Dropout(act(GN_1(Conv_0(h) + Dense_0(act(temb))))))``
    and the output is ``shortcut(x) + h`` (divided by sqrt(2) with ``skip_rescale``), the shortcut being the
    1x1 ``Conv_2`` whenever the shape changes.
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[float] = FIR_KERNEL,
        skip_rescale: bool = True,
        init_scale: float = 0.0,
        groups: int | None = None,
    ):
        super().__init__()
        if up and down:
            raise ValueError("a residual block resamples up or down, not both")
        out_ch = out_ch if out_ch else in_ch
        self.act = act  # nonlinearity
        self.up, self.down = bool(up), bool(down)  # up-sample / down-sample by 2
        self._set_fir(fir, fir_kernel)
        self.GroupNorm_0 = group_norm(in_ch, groups)  # input normalisation
        self.Conv_0 = conv3x3(in_ch, out_ch)  # first convolution (after resampling)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)  # label embedding -> per-channel shift
        self.GroupNorm_1 = group_norm(out_ch, groups)  # normalisation after the shift
        self.Dropout_0 = nn.Dropout(dropout)  # dropout before the second convolution
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)  # second convolution (near zero at init)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)  # shortcut projection
        self.skip_rescale = skip_rescale  # divide the residual sum by sqrt(2)
        self.out_ch = out_ch

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = norm_act(self.GroupNorm_0, self.act, x)
        if self.up:
            h, x = self._up(h), self._up(x)
        elif self.down:
            h, x = self._down(h), self._down(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = add_label_shift_(h, self.Dense_0(self.act(temb)))
        h = self.Conv_1(self.Dropout_0(norm_act(self.GroupNorm_1, self.act, h)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return residual_sum_(x, h, self.skip_rescale)


class SelfAttention(nn.Module):
    """Single-head self-attention over the ``H * W`` pixels (DDPM's ``AttnBlock``, NCSN++'s ``AttnBlockpp``).

    ``q, k, v = NIN_0..2(GN(x))``; ``out = x + NIN_3(softmax(q^T k / sqrt(C)) v)`` (divided by sqrt(2) with
    ``skip_rescale``), via :func:`attention`.
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0, groups: int | None = None):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, groups)  # input normalisation
        self.NIN_0 = NIN(channels, channels)  # queries
        self.NIN_1 = NIN(channels, channels)  # keys
        self.NIN_2 = NIN(channels, channels)  # values
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)  # output projection (near zero at init)
        self.skip_rescale = skip_rescale  # divide the residual sum by sqrt(2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        # pixels as rows (B * HW, C): a view when the normalised tensor is channels-last
        h = self.GroupNorm_0(x).permute(0, 2, 3, 1).reshape(b * height * width, c)
        weight = torch.cat([self.NIN_0.W, self.NIN_1.W, self.NIN_2.W], dim=1)
        bias = torch.cat([self.NIN_0.b, self.NIN_1.b, self.NIN_2.b])
        q, k, v = torch.addmm(bias, h, weight).view(b, 1, height * width, 3 * c).chunk(3, dim=-1)  # one head
        h = attention(q, k, v)  # softmax over keys, scale 1 / sqrt(C); (B, 1, HW, C)
        h = torch.addmm(self.NIN_3.b, h.reshape(b * height * width, c), self.NIN_3.W)
        h = h.view(b, height, width, c).permute(0, 3, 1, 2)  # channels-last (B, C, H, W)
        return residual_sum_(x, h, self.skip_rescale)


class ResampleConv2d(_FIRResampler):
    """A ``kernel x kernel`` convolution fused with FIR up- or down-sampling by 2 (the reference's
    ``up_or_down_sampling.Conv2d``; see :func:`models.upfirdn2d.upsample_conv_2d` / ``conv_downsample_2d``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        up: bool = False,
        down: bool = False,
        resample_kernel: Sequence[float] = FIR_KERNEL,
        use_bias: bool = True,
    ):
        super().__init__()
        if up and down:
            raise ValueError("ResampleConv2d resamples up or down, not both")
        if kernel < 1 or kernel % 2 != 1:
            raise ValueError(f"kernel must be an odd size >= 1, got {kernel}")
        self.weight = nn.Parameter(ddpm_init_(torch.empty(out_ch, in_ch, kernel, kernel)))  # (out, in, k, k)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None  # per-channel bias
        self.up, self.down = bool(up), bool(down)  # resampling direction
        self._set_fir(True, resample_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return x if self.bias is None else x + self.bias[:, None, None]


class Upsample(_FIRResampler):
    """Up-sampling by 2: nearest-neighbour or FIR (``fir``), optionally with a 3x3 convolution (``with_conv``;
    fused with the FIR filter as :class:`ResampleConv2d`)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[float] = FIR_KERNEL,
    ):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if out_ch != in_ch and not with_conv:
            raise ValueError(f"Upsample without a convolution keeps the channel count: in_ch={in_ch}, out_ch={out_ch}")
        self._set_fir(fir, fir_kernel)
        self.with_conv = bool(with_conv)  # follow the resampling by a 3x3 convolution
        if with_conv and fir:
            self.Conv2d_0 = ResampleConv2d(in_ch, out_ch, kernel=3, up=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.out_ch = out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.fir and self.with_conv:
            return self.Conv2d_0(x)
        h = self._up(x)
        return self.Conv_0(h) if self.with_conv else h


class Downsample(_FIRResampler):
    """Down-sampling by 2: average pooling or FIR (``fir``), or with ``with_conv`` a 3x3 convolution of stride 2
    (padded by one pixel at the bottom and right only, TensorFlow's "SAME") or a FIR-fused one."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[float] = FIR_KERNEL,
    ):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if out_ch != in_ch and not with_conv:
            raise ValueError(f"Downsample without a convolution keeps the channel count: in_ch={in_ch}, out_ch={out_ch}")
        self._set_fir(fir, fir_kernel)
        self.with_conv = bool(with_conv)  # resample with a learned convolution
        if with_conv and fir:
            self.Conv2d_0 = ResampleConv2d(in_ch, out_ch, kernel=3, down=True, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.out_ch = out_ch

    def forward(self, x: Tensor) -> Tensor:
        if not self.with_conv:
            return self._down(x)
        if self.fir:
            return self.Conv2d_0(x)
        return self.Conv_0(F.pad(x, (0, 1, 0, 1)))


class Combine(nn.Module):
    """Merge a progressive-growing input ``x`` into the features ``y``: ``Conv_0(x) + y`` or ``cat(Conv_0(x), y)``."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in COMBINE_METHODS:
            raise ValueError(f"progressive_combine must be one of {COMBINE_METHODS}, got {method!r}")
        self.Conv_0 = conv1x1(dim1, dim2)  # 1x1 projection of x to y's channels
        self.method = method  # "sum" or "cat"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.Conv_0(x)
        return h + y if self.method == "sum" else torch.cat([h, y], dim=1)
