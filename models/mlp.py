"""A noise-conditioned residual MLP score network for low-dimensional data (2-D toy densities, tabular vectors).

``model(x, labels)``: ``x`` of shape ``(B, D)``, ``labels`` of shape ``(B,)`` holding whatever
the parameterization of :class:`models.ScoreModel` hands the network for the SDE at hand (``t * 999`` for VP, the noise scale
``sigma(t)`` for continuous VE, an integer step index for discrete VE). The labels are embedded (random
Fourier features of ``log sigma`` as NCSN++, or the sinusoidal embedding of DDPM), mapped by a small MLP and
added inside every residual block.

Config (read only by :meth:`MLPScoreNet.from_config`; defaults in brackets):

* ``config.data.dim``: the data dimension ``D`` (required; images use ``num_channels``/``image_size``, points
  use ``dim``).
* ``config.model.name = "mlp"``; ``nf`` [128] hidden width; ``num_layers`` [3] residual blocks;
  ``embedding_type`` [``"positional"``] ``"fourier"`` | ``"positional"``; ``embedding_dim`` [``nf``];
  ``fourier_scale`` [16]; ``scale_by_sigma`` [False]; ``dropout`` [0].
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.config import config_value
from base_lib.checks import check_finite_positive, check_positive_int

from .embeddings import GaussianFourierProjection, sinusoidal_embedding
from .registry import register_model

EMBEDDING_TYPES = ("fourier", "positional")


class ResidualBlock(nn.Module):
    """``h + W2 dropout(silu(W1 silu(h) + V silu(temb)))``: pre-activation residual block, additive label embedding."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.linear_0 = nn.Linear(width, width)  # first transform of the hidden state
        self.embedding_proj = nn.Linear(width, width)  # label embedding -> per-unit shift
        self.dropout = nn.Dropout(dropout)  # dropout before the second transform
        self.linear_1 = nn.Linear(width, width)  # second transform, added to the skip path

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        r = self.linear_0(F.silu(h)) + self.embedding_proj(F.silu(temb))
        return h + self.linear_1(self.dropout(F.silu(r)))


@register_model(name="mlp")
class MLPScoreNet(nn.Module):
    """Residual MLP ``(x (B, D), labels (B,)) -> (B, D)`` conditioned on the noise level.

    ``embedding_type="fourier"`` embeds ``log(labels)`` and so expects noise scales ``sigma > 0`` as labels
    (the ``score`` parameterization of VE); ``"positional"`` embeds the labels themselves and suits every other
    convention (VP/sub-VP ``t * 999`` or ``t * (N - 1)``, integer VE step indices). With ``scale_by_sigma``
    the output is divided by the labels (the noise scale), as NCSN++ does, so that the network learns
    ``sigma * score``, which has unit scale; this needs the ``"fourier"`` embedding.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        embedding_type: str = "positional",
        embedding_dim: int | None = None,
        fourier_scale: float = 16.0,
        max_positions: int = 10000,
        scale_by_sigma: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dim = check_positive_int("dim", dim)  # data dimension D: inputs are (B, D)
        hidden_dim = check_positive_int("hidden_dim", hidden_dim)  # width of every hidden layer
        num_layers = check_positive_int("num_layers", num_layers)  # number of residual blocks
        if embedding_type not in EMBEDDING_TYPES:
            raise ValueError(f"embedding_type must be one of {EMBEDDING_TYPES}, got {embedding_type!r}")
        self.embedding_type = embedding_type  # "fourier": of log(labels); "positional": of labels
        embedding_dim = hidden_dim if embedding_dim is None else embedding_dim
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)  # label features [hidden_dim]
        if self.embedding_dim < 4 or (embedding_type == "fourier" and self.embedding_dim % 2):
            raise ValueError(f"embedding_dim must be >= 4 (and even for 'fourier'), got {self.embedding_dim}")
        self.max_positions = check_positive_int("max_positions", max_positions)  # longest period of the sinusoids
        self.scale_by_sigma = bool(scale_by_sigma)  # divide the output by the labels (noise scales)
        if self.scale_by_sigma and embedding_type != "fourier":
            raise ValueError(
                "scale_by_sigma=True divides the output by the labels, which must then be noise scales sigma: "
                "it needs embedding_type='fourier' (VE SDE, continuous labels)"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.fourier = (
            GaussianFourierProjection(self.embedding_dim // 2, check_finite_positive("fourier_scale", fourier_scale))
            if embedding_type == "fourier"
            else None
        )  # fixed random features of log sigma
        self.embedding_mlp = nn.Sequential(
            nn.Linear(self.embedding_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )  # label features -> hidden width
        self.input_proj = nn.Linear(self.dim, hidden_dim)  # data -> hidden width
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, float(dropout)) for _ in range(num_layers))
        self.output_proj = nn.Linear(hidden_dim, self.dim)  # hidden width -> data

    @classmethod
    def from_config(cls, config: Any) -> "MLPScoreNet":
        """Build from ``config.data.dim`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default: config_value(config, f"model.{name}", default)  # noqa: E731
        return cls(
            dim=config_value(config, "data.dim"),
            hidden_dim=field("nf", 128),
            num_layers=field("num_layers", 3),
            embedding_type=field("embedding_type", "positional"),
            embedding_dim=field("embedding_dim", None),
            fourier_scale=field("fourier_scale", 16.0),
            scale_by_sigma=field("scale_by_sigma", False),
            dropout=field("dropout", 0.0),
        )

    def _check_inputs(self, x: Tensor, labels: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point tensor of shape (B, {self.dim}), got {got}")
        if not isinstance(labels, Tensor) or labels.shape != (x.shape[0],):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must have shape (B,) = ({x.shape[0]},), one per row of x; got {got}")
        if self.fourier is not None and not labels.is_floating_point():
            raise ValueError(
                f"labels must be floating-point noise scales sigma > 0 for embedding_type='fourier', "
                f"got {labels.dtype}; "
                "integer step indices need embedding_type='positional'"
            )

    def _embed(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        if self.fourier is not None:
            return self.fourier(torch.log(labels.to(dtype)))
        return sinusoidal_embedding(labels, self.embedding_dim, self.max_positions, dtype=dtype)

    def label_features(self, labels: Tensor) -> Tensor:
        """The embedding of the noise labels fed to every block, ``(B, hidden_dim)``, in the network's precision."""
        return self.embedding_mlp(self._embed(labels, self.input_proj.weight.dtype))

    @property
    def label_kinds(self) -> tuple[str, ...] | None:
        """``("sigma",)`` with the Fourier embedding of ``log(labels)``; ``None`` (any label) with the positional one."""
        return ("sigma",) if self.embedding_type == "fourier" else None

    def trunk(self, x: Tensor, labels: Tensor, temb: Tensor) -> Tensor:
        """The residual trunk on ``x`` given the block conditioning ``temb``, with the output scaling."""
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, temb)
        out = self.output_proj(F.silu(h))
        if self.scale_by_sigma:
            out = out / labels.to(out.dtype)[:, None]
        return out

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        self._check_inputs(x, labels)
        return self.trunk(x, labels, self.label_features(labels))
