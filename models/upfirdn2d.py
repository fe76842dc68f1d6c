"""FIR resampling of image batches in plain PyTorch (no compiled extension), on any device and in any float dtype.

The basic operation is ``upfirdn2d`` (as in StyleGAN2, Karras et al. 2020, and the NCSN++ of [SDE] appendix H):
on each axis of each channel,

1. *up*: insert ``up - 1`` zeros after every sample (length ``H * up``);
2. *pad*: add ``pad0`` zeros before and ``pad1`` after (a negative amount crops instead);
3. *FIR*: a true 2-D convolution with ``kernel`` keeping only the fully overlapping ("valid") positions;
4. *down*: keep every ``down``-th sample starting with the first.

The output has ``(H * up + pad0 + pad1 - kernel_h) // down + 1`` rows (and likewise columns). The zero insertion is
never materialised: for ``up > 1`` a strided transposed convolution computes the FIR of the zero-stuffed signal
directly, and for ``down > 1`` a strided convolution computes only the kept samples. Every channel is filtered
independently (a depthwise, grouped convolution).

On top of it, the resampling helpers of NCSN++ (the 2021 reference's ``up_or_down_sampling``):
:func:`upsample_2d`, :func:`downsample_2d` and the fused convolution + resampling
:func:`upsample_conv_2d` (``conv2d(upsample_2d(x), w)``) and :func:`conv_downsample_2d`
(``downsample_2d(conv2d(x, w))``), both padded once at the start rather than between the two steps, and the
kernel construction :func:`fir_kernel_2d`. The 2021 reference's ``upsample_conv_2d`` cannot run (it slices a
tensor with a negative step); this one can, for every factor.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

KernelLike = Union[Tensor, Sequence[float], Sequence[Sequence[float]]]
"""A 2-D FIR kernel tensor, or 1-D taps (separable kernel), or a nested 2-D list."""


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, C, H, W), got {got}")


def fir_kernel_2d(
    taps: KernelLike, gain: float = 1.0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The 2-D FIR kernel ``gain * K / sum(K)`` with ``K = outer(taps, taps)`` (1-D taps) or ``K = taps`` (2-D).

    Normalising to unit sum makes a constant image come out scaled by ``gain`` (before any up-sampling gain).
    The kernel is formed in float64 and then cast to ``dtype``, so dyadic taps such as ``(1, 3, 3, 1)`` give
    exactly the reference's float32 values.
    """
    k = torch.as_tensor(taps, dtype=torch.float64, device="cpu").detach()
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] < 1:
        raise ValueError(f"FIR taps must be 1-D or a square 2-D array, got shape {tuple(k.shape)}")
    total = k.sum()
    if not torch.isfinite(k).all() or total == 0:
        raise ValueError(f"FIR taps must be finite with a non-zero sum, got {k.tolist()}")
    return (k / total * gain).to(dtype=dtype, device=device)


def _as_kernel(kernel: KernelLike | None, x: Tensor, factor: int) -> Tensor:
    """``kernel`` as a normalised square 2-D tensor in ``x``'s dtype and on its device (taps are normalised here;
    a 2-D tensor is taken as already normalised; ``None`` is the box filter ``(1,) * factor``)."""
    if kernel is None:
        kernel = (1.0,) * factor
    if isinstance(kernel, Tensor) and kernel.ndim == 2:
        if kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"the FIR kernel must be square, got shape {tuple(kernel.shape)}")
        return kernel.to(dtype=x.dtype, device=x.device)
    return fir_kernel_2d(kernel, dtype=x.dtype, device=x.device)


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: Sequence[int] = (0, 0)) -> Tensor:
    """Zero-insertion up-sampling by ``up``, padding ``pad = (pad0, pad1)`` on both axes (negative crops), true 2-D
    convolution with ``kernel (kh, kw)``, then decimation by ``down``; channels are filtered independently.

    ``x`` is ``(B, C, H, W)``; the result has ``(H * up + pad0 + pad1 - kh) // down + 1`` rows and the analogous
    number of columns. Works in ``x``'s dtype and on its device (the kernel is cast to match).
    """
    _check_images(x)
    if not isinstance(kernel, Tensor) or kernel.ndim != 2:
        raise ValueError(f"kernel must be a 2-D tensor (kh, kw), got {kernel!r}")
    up = _check_int("up", up, 1)
    down = _check_int("down", down, 1)
    if len(pad) != 2:
        raise ValueError(f"pad must be a pair (pad0, pad1), got {pad!r}")
    pad0, pad1 = (_check_int("pad", p, -(1 << 62)) for p in pad)
    channels, height, width = x.shape[1:]
    kh, kw = kernel.shape
    if min(height * up + pad0 + pad1 - kh, width * up + pad0 + pad1 - kw) < 0:
        raise ValueError(
            f"upfirdn2d: an input of {height}x{width} up-sampled by {up} and padded by {tuple(pad)} is smaller than "
            f"the {kh}x{kw} kernel"
        )
    weight = kernel.to(dtype=x.dtype, device=x.device)
    if up == 1:
        # F.pad crops on negative amounts; conv2d is a cross-correlation, so flip for a true convolution
        x = F.pad(x, (pad0, pad1, pad0, pad1))
        depthwise = weight.flip(0, 1).expand(channels, 1, kh, kw)
        return F.conv2d(x, depthwise, stride=down, groups=channels)
    # the transposed convolution is the full convolution of the zero-stuffed signal: index m of its output is index
    # m - (k - 1) + pad0 of the padded "valid" result, which therefore is a (possibly negative) re-padding of it
    depthwise = weight.expand(channels, 1, kh, kw)
    full = F.conv_transpose2d(x, depthwise, stride=up, groups=channels)
    out = F.pad(full, (pad0 - kw + 1, pad1 + up - kw, pad0 - kh + 1, pad1 + up - kh))
    return out[:, :, ::down, ::down] if down > 1 else out


def upsample_2d(x: Tensor, kernel: KernelLike | None = None, factor: int = 2, gain: float = 1.0) -> Tensor:
    """Up-sample ``(B, C, H, W) -> (B, C, H * factor, W * factor)`` with the FIR ``kernel`` (normalised taps or kernel).

    The kernel is scaled by ``gain * factor^2`` so that a constant image is multiplied by ``gain``; the padding
    ``((p + 1) // 2 + factor - 1, p // 2)``, ``p = len(kernel) - factor``, centres the output. The default
    (``None``) ``(1,) * factor`` is nearest-neighbour up-sampling.
    """
    factor = _check_int("factor", factor, 1)
    k = _as_kernel(kernel, x, factor) * (gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, kernel: KernelLike | None = None, factor: int = 2, gain: float = 1.0) -> Tensor:
    """Down-sample ``(B, C, H, W) -> (B, C, H // factor, W // factor)`` with the FIR ``kernel``.

    The kernel is scaled by ``gain``; padding ``((p + 1) // 2, p // 2)``, ``p = len(kernel) - factor``. The default
    (``None``) ``(1,) * factor`` is average pooling.
    """
    factor = _check_int("factor", factor, 1)
    k = _as_kernel(kernel, x, factor) * gain
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def _check_conv_weight(x: Tensor, weight: Tensor) -> int:
    _check_images(x)
    if not isinstance(weight, Tensor) or weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be (out, in, k, k), got {getattr(weight, 'shape', weight)!r}")
    if weight.shape[2] % 2 != 1:
        raise ValueError(f"the convolution must have an odd size, got {weight.shape[2]}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight takes {weight.shape[1]} input channels, x has {x.shape[1]}")
    return weight.shape[2]


def upsample_conv_2d(
    x: Tensor, weight: Tensor, kernel: KernelLike | None = None, factor: int = 2, gain: float = 1.0
) -> Tensor:
    """Up-sampling followed by a ``k x k`` convolution ``weight (out, in, k, k)`` (odd ``k``), padded once at the start:
    ``conv2d(upfirdn2d(x, K, up=factor, pad=(a + k // 2, b + k // 2)), weight)`` with ``K`` and ``(a, b)`` the kernel
    and padding of :func:`upsample_2d`. Output ``(B, out, H * factor, W * factor)``.

    It equals ``conv2d(upsample_2d(x), weight, padding=k // 2)`` except on a border ``k // 2`` pixels wide, where
    the convolution sees the filtered signal rather than zeros (StyleGAN2's fused op; its padding is written here
    for every factor, not only 2). Computed as a transposed convolution of stride ``factor`` with the flipped
    weight (the convolution of the zero-stuffed input, ``factor^2`` times cheaper than at full resolution)
    followed by the FIR filter.
    """
    factor = _check_int("factor", factor, 1)
    size = _check_conv_weight(x, weight)
    k = _as_kernel(kernel, x, factor) * (gain * factor**2)
    p = k.shape[0] - factor - (size - 1)
    stuffed = F.conv_transpose2d(x, weight.flip(2, 3).transpose(0, 1), stride=factor)
    return upfirdn2d(stuffed, k, pad=((p + 1) // 2 + factor - 1, p // 2 + factor - 1))


def conv_downsample_2d(
    x: Tensor, weight: Tensor, kernel: KernelLike | None = None, factor: int = 2, gain: float = 1.0
) -> Tensor:
    """FIR down-sampling fused with a ``k x k`` convolution ``weight`` (odd ``k``), padded once at the start: the FIR
    filter of :func:`downsample_2d` with padding widened by ``k // 2``, then a convolution of stride ``factor``.
    Output ``(B, out, H // factor, W // factor)``.

    Both are linear and shift-invariant, so this is also ``upfirdn2d(conv2d(x, weight, padding=2 * (k // 2)), K,
    down=factor, pad=(a - k // 2, b - k // 2))`` (full convolution, then the filter of :func:`downsample_2d` with
    kernel ``K`` and padding ``(a, b)``); it equals ``downsample_2d(conv2d(x, weight, padding=k // 2))`` away from
    the border.
    """
    factor = _check_int("factor", factor, 1)
    size = _check_conv_weight(x, weight)
    k = _as_kernel(kernel, x, factor) * gain
    p = k.shape[0] - factor + (size - 1)
    return F.conv2d(upfirdn2d(x, k, pad=((p + 1) // 2, p // 2)), weight, stride=factor)
