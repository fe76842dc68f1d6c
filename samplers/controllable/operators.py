"""Linear measurements ``y = A x`` with orthonormal rows: the one abstraction behind inpainting, colorization and
super-resolution with an unconditional score.

Each controllable task of [SDE] (Song et al., ICLR 2021, appendix I) and its super-resolution cousin (Kawar et al.,
"Denoising Diffusion Restoration Models", 2022; Chung et al., "Improving Diffusion Models for Inverse Problems
using Manifold Constraints", 2022) observes a linear function of the data and generates the rest. When the rows of
``A`` are orthonormal (``A A^T = I``), three maps say everything the samplers need:

* ``project(x) = A x``: the measurement of ``x``;
* ``lift(y) = A^T y``: the data-space vector whose measurement is ``y`` and which has no component outside the
  measured subspace (``A^T A`` is the orthogonal projection onto it);
* ``complete(x, y) = x - A^T A x + A^T y``: ``x`` with its measured part replaced by ``y``, the rest unchanged.

Because ``A`` has orthonormal rows and the SDEs of :mod:`sde_lib` have isotropic noise and a drift linear in ``x``
(``f(x, t) = f(t) x``), the measurement of the diffusion is again that diffusion, in the smaller space:
``A x(t) = alpha(t) A x(0) + sigma(t) A z`` with ``A z ~ N(0, I_m)``, and ``A f(x, t) = f(A x, t)``. The replacement
hook (:class:`.known_values.KnownValueReplacement`) and SMCDiff (:mod:`.smc`) are written once on these maps.

Three operators:

* :class:`MaskOperator` (inpainting): ``A`` selects the known coordinates. So that a batch may hold a different
  mask per example, a measurement keeps the data's shape with zeros where nothing is measured (the coordinates of
  ``A^T y``); ``A A^T = I`` holds on the measured coordinates.
* :class:`GreyLevelOperator` (colorization): the first channel of the orthogonal colour decoupling of
  :func:`.colorization.colour_decoupling_matrix`, ``y = (r + g + b) / sqrt(3) = sqrt(3) * grey``, shape
  ``(B, 1, ...)``.
* :class:`BlockAverage` (super-resolution): the mean of each ``f x f`` block of an image ``(B, C, H, W)``. The
  orthonormal row of a block has ``f^2`` entries ``1 / f``, so ``A x = f * mean(block)``: the measurement of a
  user's low-resolution image of block means ``low_res`` ``(B, C, H / f, W / f)`` is ``f * low_res``
  (:meth:`BlockAverage.from_block_means`, and back :meth:`BlockAverage.to_block_means`), and
  ``A^T y`` repeats ``y / f`` over each block, i.e. nearest-neighbour upsampling of the block means.

Shapes and factors are checked once, at the boundary (:meth:`LinearMeasurement.check_data`,
:meth:`LinearMeasurement.check_measurement`); ``project`` / ``lift`` / ``complete`` run in the samplers' inner
loops unchecked.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from base_lib.checks import check_positive_int


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_floating(value: object, name: str, min_ndim: int = 2) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim < min_ndim or value.shape[0] < 1:
        dims = "(B, ...)" if min_ndim == 2 else "(B, C, H, W)"
        raise ValueError(f"{name} must be a floating-point tensor of shape {dims}, got {_describe(value)}")
    return value


class LinearMeasurement(abc.ABC):
    """A linear measurement ``y = A x`` of a batch ``x`` ``(B, ...)``, with orthonormal rows (``A A^T = I``).

    Subclasses give :meth:`project` and :meth:`lift` (and the checks); :meth:`complete` and
    :meth:`standard_normal` follow from them and may be overridden only to save work or rounding.
    """

    @abc.abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """``A x``: the measurement of each example of ``x``."""

    @abc.abstractmethod
    def lift(self, y: Tensor) -> Tensor:
        """``A^T y``: the data-space vector of the measurement ``y`` with nothing outside the measured subspace."""

    def complete(self, x: Tensor, y: Tensor) -> Tensor:
        """``x - A^T A x + A^T y``: ``x`` with its measured part replaced by ``y`` (so ``project`` of the result is
        ``y``) and its part orthogonal to the rows of ``A`` kept."""
        return x + self.lift(y - self.project(x))

    def standard_normal(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        """A draw of ``N(0, I_m)`` in the measurement space, shaped as the measurement ``like``: the law of ``A z`` for
        ``z ~ N(0, I)`` of the data space (orthonormal rows)."""
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def repeat_interleave(self, repeats: int) -> "LinearMeasurement":
        """The operator of a batch in which each example is repeated ``repeats`` times (the particles of SMC).
        Operators that act alike on every example return themselves."""
        return self

    @abc.abstractmethod
    def check_data(self, x: object, name: str = "data") -> Tensor:
        """``x`` if it is a batch this operator measures, else a one-line ``ValueError`` naming ``name``."""

    @abc.abstractmethod
    def check_measurement(self, y: object, name: str = "measurement") -> Tensor:
        """``y`` if it is a batch of measurements of this operator, else a one-line ``ValueError`` naming ``name``."""

    def data_shape(self, y: Tensor) -> tuple[int, ...]:
        """The shape ``(B, ...)`` of the data batch whose measurement is ``y``."""
        return (y.shape[0], *self.lift(y[:1]).shape[1:])


class MaskOperator(LinearMeasurement):
    """Inpainting: ``A`` selects the coordinates where ``mask`` is 1 (module docstring: a measurement keeps the data's
    shape, zero where nothing is measured, so that every example may have its own mask)."""

    def __init__(self, mask: Tensor):
        self.mask = mask  # boolean, True where a value is measured (known); shape (B, ...) or broadcastable to it

    def project(self, x: Tensor) -> Tensor:
        return torch.where(self.mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def lift(self, y: Tensor) -> Tensor:
        return torch.where(self.mask, y, torch.zeros((), dtype=y.dtype, device=y.device))

    def complete(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.where(self.mask, y, x)  # exact: no arithmetic on the kept or the replaced values

    def standard_normal(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.project(super().standard_normal(like, generator))

    def repeat_interleave(self, repeats: int) -> "MaskOperator":
        if self.mask.shape[0] == 1:
            return self
        return MaskOperator(self.mask.repeat_interleave(repeats, dim=0))

    def check_data(self, x: object, name: str = "data") -> Tensor:
        x = _check_floating(x, name)
        try:
            broadcast = torch.broadcast_shapes(self.mask.shape, x.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != x.shape:
            raise ValueError(f"mask of shape {tuple(self.mask.shape)} does not broadcast to the {name} shape {tuple(x.shape)}")
        return x

    def check_measurement(self, y: object, name: str = "measurement") -> Tensor:
        return self.check_data(y, name)

    def data_shape(self, y: Tensor) -> tuple[int, ...]:
        return tuple(y.shape)

    @classmethod
    def from_mask(cls, mask: object, data: Tensor) -> "MaskOperator":
        """The operator of ``mask`` (1 = known, 0 = to generate; bool, integer or float of 0s and 1s, any shape that
        broadcasts to ``data``), expanded to ``data.shape`` on its device; a one-line ``ValueError`` naming ``mask``
        otherwise."""
        if not isinstance(mask, Tensor):
            raise ValueError(f"mask must be a tensor of 0s and 1s broadcastable to {tuple(data.shape)}, got {_describe(mask)}")
        try:
            broadcast = torch.broadcast_shapes(mask.shape, data.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != data.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {tuple(data.shape)}")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask values must be 0 (to generate) or 1 (known)")
        return cls(mask.to(device=data.device, dtype=torch.bool).expand(data.shape))


class ChannelTransform:
    """The orthogonal map ``x -> M x`` applied to the channels (dimension 1) of ``(B, C, ...)`` tensors, and its inverse."""

    def __init__(self, matrix: Tensor):
        self.matrix = matrix  # (C, C) orthogonal matrix, in the dtype and device of the data

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ij,bj...->bi...", self.matrix, x)

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("ji,bj...->bi...", self.matrix, y)


class GreyLevelOperator(LinearMeasurement):
    """Colorization: the grey channel of the orthogonal colour decoupling ``M`` (``M M^T = I``, first row
    ``(1, 1, 1) / sqrt(3)``) of RGB images ``(B, 3, ...)``; ``y = (M x)_0 = sqrt(3) * mean over channels``,
    ``(B, 1, ...)``."""

    def __init__(self, matrix: Tensor):
        self.transform = ChannelTransform(matrix)  # (3, 3) orthogonal, first row (1, 1, 1) / sqrt(3); data's dtype
        self.matrix = matrix  # the same matrix: its first row is A

    def project(self, x: Tensor) -> Tensor:
        return self.transform.forward(x)[:, :1]

    def standard_normal(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        # A z as the grey channel of a standard normal draw of the decoupled space (M z ~ N(0, I) for orthogonal M)
        noise = torch.randn((like.shape[0], 3, *like.shape[2:]), generator=generator, device=like.device, dtype=like.dtype)
        return noise[:, :1]

    def lift(self, y: Tensor) -> Tensor:
        return self.matrix[0].reshape(1, 3, *([1] * (y.ndim - 2))) * y

    def complete(self, x: Tensor, y: Tensor) -> Tensor:
        # replace channel 0 in the decoupled space: one map there and one back
        return self.transform.inverse(torch.cat([y, self.transform.forward(x)[:, 1:]], dim=1))

    def check_data(self, x: object, name: str = "data") -> Tensor:
        x = _check_floating(x, name)
        if x.ndim < 2 or x.shape[1] != 3:
            raise ValueError(f"{name} must have 3 colour channels, shape (B, 3, ...), got shape {tuple(x.shape)}")
        return x

    def check_measurement(self, y: object, name: str = "measurement") -> Tensor:
        y = _check_floating(y, name)
        if y.shape[1] != 1:
            raise ValueError(f"{name} must be one grey channel, shape (B, 1, ...), got shape {tuple(y.shape)}")
        return y

    def data_shape(self, y: Tensor) -> tuple[int, ...]:
        return (y.shape[0], 3, *y.shape[2:])


class BlockAverage(LinearMeasurement):
    """Super-resolution: the mean of each ``factor x factor`` block of images ``(B, C, H, W)``, as the orthonormal
    measurement ``y = factor * block mean`` ``(B, C, H / factor, W / factor)`` (module docstring)."""

    def __init__(self, factor: int):
        self.factor = check_positive_int("factor", factor)  # side of the averaged blocks (1: every pixel measured)

    def block_means(self, x: Tensor) -> Tensor:
        """The low-resolution image of block means ``(B, C, H / f, W / f)``."""
        return F.avg_pool2d(x, self.factor) if self.factor > 1 else x

    def upsample(self, low: Tensor) -> Tensor:
        """Nearest-neighbour upsampling: each pixel of ``low`` repeated over its ``f x f`` block."""
        return low.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)

    def from_block_means(self, low_res: Tensor) -> Tensor:
        """The measurement ``y = f * low_res`` of a low-resolution image of block means."""
        return low_res * self.factor

    def to_block_means(self, y: Tensor) -> Tensor:
        """The block means ``y / f`` of a measurement."""
        return y / self.factor

    def project(self, x: Tensor) -> Tensor:
        return self.from_block_means(self.block_means(x))

    def lift(self, y: Tensor) -> Tensor:
        return self.upsample(self.to_block_means(y))

    def complete(self, x: Tensor, y: Tensor) -> Tensor:
        # in block means: x + upsample(target means - means of x), with one rounding less than the generic form
        return x + self.upsample(self.to_block_means(y) - self.block_means(x))

    def check_data(self, x: object, name: str = "data") -> Tensor:
        x = _check_floating(x, name, min_ndim=4)
        if x.ndim != 4:
            raise ValueError(f"{name} must be images of shape (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"factor={self.factor} must divide the image size {tuple(x.shape[2:])} of {name}")
        return x

    def check_measurement(self, y: object, name: str = "low_res") -> Tensor:
        y = _check_floating(y, name, min_ndim=4)
        if y.ndim != 4:
            raise ValueError(f"{name} must be images of shape (B, C, H / factor, W / factor), got shape {tuple(y.shape)}")
        return y

    def data_shape(self, y: Tensor) -> tuple[int, ...]:
        return (y.shape[0], y.shape[1], y.shape[2] * self.factor, y.shape[3] * self.factor)


def operator_matrix(operator: LinearMeasurement, data_shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
    """The matrix ``A`` ``(m, D)`` of ``operator`` on one example of ``data_shape`` (``(1, ...)``), read off
    ``project`` of the unit vectors: for tests and small problems (``D`` columns, one batch of ``D`` examples).
    For a :class:`MaskOperator` only its measured rows are kept."""
    if isinstance(operator, MaskOperator):
        operator = MaskOperator(operator.mask[:1])  # the first example's mask
    size = math.prod(data_shape[1:])
    basis = torch.eye(size, dtype=dtype).reshape(size, *data_shape[1:])
    rows = operator.repeat_interleave(size).project(basis).reshape(size, -1).T  # (measurement size, D)
    if isinstance(operator, MaskOperator):
        rows = rows[operator.mask.reshape(-1)]
    return rows


__all__ = ["LinearMeasurement", "MaskOperator", "ChannelTransform", "GreyLevelOperator", "BlockAverage", "operator_matrix"]
