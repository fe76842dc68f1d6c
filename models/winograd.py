"""3x3 convolutions by Winograd's minimal filtering algorithm F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016), for CPU inference.

A 3x3 convolution (stride 1, padding 1) computed directly costs ``2 * 9 * C_in * C_out`` flops per output pixel, and
on a CPU oneDNN already runs it near the peak of the FMA units: the only way left to make the U-Nets faster is fewer
multiplications. F(m x m, 3x3) computes an ``m x m`` output tile from an ``(m + 2) x (m + 2)`` input tile ``d`` as

    Y = A^T [ (G g G^T) * (B^T d B) ] A                                          (Lavin & Gray, 2016)

(``*`` elementwise, ``g`` the 3x3 filter). Summed over input channels, the ``(m + 2)^2`` elementwise products become
``(m + 2)^2`` independent matrix products ``(tiles, C_in) @ (C_in, C_out)``: for ``m = 4``, 36 multiplications per
4x4 output tile instead of 144, 4 times fewer. The transforms ``B^T . B`` and ``A^T . A`` are linear maps of each tile
applied here as two small matrix products each (one per tile axis); the filter transform ``G g G^T`` is computed once
per weight tensor and cached.

The result is the convolution up to rounding: the transforms have entries up to 8 (``A``) and 5 (``B``), so in
float32 the error is several times that of a direct convolution (relative ``~5e-6`` per layer against ``~1e-6``,
measured in ``tests/test_winograd.py``), far below the parity tolerance with the reference (``1e-4``). It is used only where it
pays and changes nothing else (:func:`winograd_applies`): float32 CPU tensors, no autograd (training and gradients
use the direct convolution), height and width multiples of 4 and at least :data:`MIN_SIZE`, at least
:data:`MIN_CHANNELS` input and output channels, and by default not on AVX-512 CPUs, whose direct convolutions are
fast enough (:func:`_direct_convolution_at_peak`). :func:`set_winograd_enabled` switches it on or off globally (e.g. for bit-wise
comparisons with ``F.conv2d``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TILE = 4  # m: output tile size of F(4x4, 3x3)
MIN_SIZE = 8  # smallest height/width where F(4x4, 3x3) clearly beats oneDNN's direct convolution (2-core AVX2 CPU)
MIN_CHANNELS = 32  # fewer input or output channels give matrix products too thin to pay for the transforms

# Lavin & Gray's matrices for F(4, 3), interpolation points 0, 1, -1, 2, -2 and infinity (float64, exact)
_BT = torch.tensor(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=torch.float64,
)
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)
_AT = torch.tensor(
    [
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ],
    dtype=torch.float64,
)
_N = TILE + 2  # input tile size

def _direct_convolution_at_peak() -> bool:
    """Whether this CPU runs oneDNN's AVX-512 convolutions: they reach about twice the AVX2 rate, and there F(4x4, 3x3)
    no longer pays (``benchmarks/models.py --no-winograd``: the digits network 2x slower with it, the CIFAR-10 U-Nets
    no faster on an AVX-512 EPYC); on AVX2 CPUs it makes the U-Nets 1.7x faster."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")


_enabled = not _direct_convolution_at_peak()  # the process-wide default; set_winograd_enabled overrides it


def set_winograd_enabled(enabled: bool) -> None:
    """Switch the Winograd path of :class:`WinogradConv2d` on or off for the whole process."""
    global _enabled
    _enabled = bool(enabled)


def winograd_enabled() -> bool:
    """Whether :class:`WinogradConv2d` may use the Winograd path."""
    return _enabled


@contextlib.contextmanager
def winograd_disabled() -> Iterator[None]:
    """Context manager: direct convolutions only inside the block."""
    previous = _enabled
    set_winograd_enabled(False)
    try:
        yield
    finally:
        set_winograd_enabled(previous)


_matrices: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor]] = {}


def _transform_matrices(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``B^T`` (6 x 6), ``A^T`` (4 x 6) and ``G (x) G`` (36 x 9) in ``dtype`` on ``device``."""
    key = (dtype, torch.device(device))
    if key not in _matrices:
        with torch.inference_mode(False), torch.no_grad():
            _matrices[key] = (_BT.to(dtype=dtype, device=device), _AT.to(dtype=dtype, device=device),
                              torch.kron(_G, _G).to(dtype=dtype, device=device))
    return _matrices[key]


def winograd_weight(weight: Tensor) -> Tensor:
    """The filter transform ``U = G g G^T`` of every (output, input) channel pair: ``(out, in, 3, 3) -> (36, in, out)``,
    laid out for the batched matrix product of :func:`winograd_conv3x3`."""
    out_ch, in_ch = weight.shape[:2]
    _, _, gg = _transform_matrices(weight.dtype, weight.device)
    u = gg @ weight.reshape(out_ch * in_ch, 9).t()  # (36, out * in)
    return u.reshape(_N * _N, out_ch, in_ch).transpose(1, 2).contiguous()


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv2d(x, g, bias, padding=1)`` for ``x (B, C, H, W)`` with H, W multiples of 4, given ``u =
    winograd_weight(g)``. Works on the channels-last layout and returns a channels-last tensor."""
    batch, in_ch, height, width = x.shape
    out_ch = u.shape[2]
    bt, at, _ = _transform_matrices(x.dtype, x.device)
    rows, cols = height // TILE, width // TILE
    tiles = batch * rows * cols
    # zero-padded input, (B, H + 2, W + 2, C) (only the border is zeroed); its overlapping 6x6 tiles with stride 4,
    # copied out of a strided view as d (36, tiles * C), rows indexed by the tile position (r, s)
    padded = x.new_empty(batch, height + 2, width + 2, in_ch)
    padded[:, 0].zero_()
    padded[:, height + 1].zero_()
    padded[:, 1 : height + 1, 0].zero_()
    padded[:, 1 : height + 1, width + 1].zero_()
    padded[:, 1 : height + 1, 1 : width + 1] = x.permute(0, 2, 3, 1)
    s_b, s_h, s_w, s_c = padded.stride()
    d = padded.as_strided((_N, _N, batch, rows, cols, in_ch), (s_h, s_w, s_b, TILE * s_h, TILE * s_w, s_c))
    del padded
    # B^T d B, one tile axis at a time (rebinding frees each intermediate as soon as the next exists)
    d = (bt @ d.reshape(_N, -1)).view(_N, _N, -1)  # over r
    d = torch.matmul(bt, d).view(_N * _N, tiles, in_ch)  # over s, for every r'
    m = torch.bmm(d, u)  # (36, tiles, out): the elementwise products summed over input channels
    del d
    # A^T m A, one axis at a time
    m = (at @ m.view(_N, -1)).view(TILE, _N, -1)
    m = torch.matmul(at, m).view(TILE, TILE, batch, rows, cols, out_ch).permute(2, 3, 0, 4, 1, 5)
    out = x.new_empty(batch, rows, TILE, cols, TILE, out_ch)  # (B, H, W, out) with H, W split into tiles
    if bias is None:
        out.copy_(m)
    else:
        torch.add(m, bias, out=out)
    return out.reshape(batch, height, width, out_ch).permute(0, 3, 1, 2)


def winograd_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :class:`WinogradConv2d` takes the Winograd path for this input: enabled, not traced by
    ``torch.compile`` (the compiled graph convolves directly), float32 on the CPU, no autograd, height and width
    multiples of 4 and ``>= MIN_SIZE``, ``>= MIN_CHANNELS`` input and output channels."""
    return (
        _enabled
        and not torch.compiler.is_compiling()  # Inductor mis-lowers the preallocated tiled output (a bad view)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and x.ndim == 4
        and x.shape[1] >= MIN_CHANNELS
        and weight.shape[0] >= MIN_CHANNELS
        and x.shape[2] % TILE == 0
        and x.shape[3] % TILE == 0
        and min(x.shape[2], x.shape[3]) >= MIN_SIZE
    )


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, padding-1 ``nn.Conv2d`` (same parameters and state dict) that runs by F(4x4, 3x3) where
    :func:`winograd_applies`, and as ``nn.Conv2d`` otherwise.

    The transformed filter is cached, keyed by the weight's storage, version counter, dtype and device: updates
    through optimizers, ``load_state_dict``, ``copy_`` under ``torch.no_grad()`` or ``.to()`` are seen. Writing into
    ``weight.data`` bypasses the version counter; call :meth:`clear_winograd_cache` after doing so.
    The cache holds 4 times the weight (36 instead of 9 numbers per filter): for the full-size CIFAR-10 NCSN++,
    535 MiB beside its 239 MiB of parameters once every resolution from 8x8 up has run.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)
        self._winograd_cache: tuple[tuple, Tensor] | None = None

    def clear_winograd_cache(self) -> None:
        self._winograd_cache = None

    def _transformed_weight(self) -> Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._winograd_cache is None or self._winograd_cache[0] != key:
            with torch.no_grad():
                self._winograd_cache = (key, winograd_weight(w.detach()))
        return self._winograd_cache[1]

    def forward(self, x: Tensor) -> Tensor:
        if winograd_applies(x, self.weight):
            return winograd_conv3x3(x, self._transformed_weight(), self.bias)
        return F.conv2d(x, self.weight, self.bias, padding=1)
