"""Embeddings of the noise-conditioning labels (times, noise scales or step indices) shared by the score networks.

Both follow the 2021 reference's formulas and evaluation order, so the big networks (NCSN++, DDPM) can reuse
them and stay numerically identical to the reference:

* :class:`GaussianFourierProjection`: random Fourier features ``[sin(2 pi W s), cos(2 pi W s)]`` with fixed
  ``W ~ N(0, scale^2)`` (Tancik et al., 2020), which NCSN++ applies to ``s = log sigma`` ([SDE] appendix H.1).
* :func:`sinusoidal_embedding`: the Transformer position encoding (Vaswani et al., 2017, section 3.5) that
  DDPM uses for its integer or real time steps (Ho et al., 2020, appendix B).
* :func:`check_image_inputs`: the check of an image network's inputs and labels (shape, dtype, label kind) that
  the U-Net and DiT run at their boundary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianFourierProjection(nn.Module):
    """``s (B,) -> [sin(2 pi W s), cos(2 pi W s)] (B, 2 * embedding_size)`` with ``W ~ N(0, scale^2)`` drawn once.

    ``W`` is an ``nn.Parameter`` with ``requires_grad=False``: it is saved in the ``state_dict`` (key ``W``, as in
    the reference) but never trained, so an :class:`models.ExponentialMovingAverage` leaves it out.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)  # random frequencies

    def forward(self, s: Tensor) -> Tensor:
        phase = s[:, None] * self.W[None, :] * 2 * math.pi  # the reference's left-to-right order
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


def sinusoidal_embedding(
    labels: Tensor, embedding_dim: int, max_positions: int = 10000, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Sinusoidal embedding ``[sin(l w_k), cos(l w_k)]_k`` of labels ``(B,)``, shape ``(B, embedding_dim)``.

    Frequencies ``w_k = max_positions^(-k / (h - 1))``, ``k = 0..h-1`` with ``h = embedding_dim // 2`` (Vaswani
    et al., 2017; DDPM's ``get_timestep_embedding``); an odd ``embedding_dim`` gets one trailing zero. Computed in
    ``dtype`` (float32 by default, as the reference does whatever the labels' dtype).
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
    if embedding_dim < 4:
        raise ValueError(f"embedding_dim must be >= 4 (two frequencies at least), got {embedding_dim}")
    half = embedding_dim // 2
    log_step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=labels.device) * -log_step)
    angles = labels.to(dtype)[:, None] * freqs[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if embedding_dim % 2 == 1:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


def check_image_inputs(x: Tensor, labels: Tensor, image_size: int, num_channels: int, dtype: torch.dtype,
                       embedding_type: str) -> None:
    """The inputs of a noise-conditional image network, checked once at its boundary: ``x`` ``(B, C, H, W)`` of
    ``num_channels`` and ``image_size`` in the network's ``dtype``, one noise label per image, floating-point labels
    for a Fourier embedding; ``ValueError`` naming the argument otherwise."""
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1:] != (num_channels, image_size, image_size):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (B, {num_channels}, {image_size}, {image_size}) (num_channels, image_size), "
                         f"got {got}")
    if x.dtype != dtype:
        raise ValueError(f"x has dtype {x.dtype}, the network {dtype}: convert one of them")
    if not isinstance(labels, Tensor) or labels.shape != (x.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape (B,) = ({x.shape[0]},), one per image; got {got}")
    if embedding_type == "fourier" and not labels.is_floating_point():
        raise ValueError(f"labels must be floating-point noise scales sigma > 0 for embedding_type='fourier', got {labels.dtype}")
