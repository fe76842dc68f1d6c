"""A noise-conditional classifier for low-dimensional data: ``classifier(x(t), t) -> (B, K)`` logits of ``p_t(y | x(t))``.

The classifier of classifier guidance ([SDE] = Song et al., ICLR 2021, section 5 and appendix I.1: ``grad_x log
p_t(y | x(t))`` is added to the score, eq. (14)) must know how noisy its input is, so it is conditioned on the SDE
time ``t`` itself (not on a network label as the score networks of :mod:`models.score_model` are): one classifier works
for every sampler and every SDE family. The trunk is that of :class:`models.MLPScoreNet` (its
:class:`models.mlp.ResidualBlock`, additive time embedding) with a ``K``-way linear head.

Config (read only by :meth:`MLPClassifier.from_config`; defaults in brackets): ``config.data.dim`` (required),
``config.data.num_classes`` (required), ``config.model.name = "mlp_classifier"``, ``nf`` [128], ``num_layers``
[3], ``embedding_dim`` [``nf``], ``time_scale`` [999], ``dropout`` [0].
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.config import config_value
from base_lib.checks import check_finite_positive, check_positive_int

from .embeddings import sinusoidal_embedding
from .mlp import ResidualBlock
from .registry import register_model


@register_model(name="mlp_classifier")
class MLPClassifier(nn.Module):
    """Residual MLP ``(x (B, D), t (B,)) -> logits (B, K)``, time-conditioned by the sinusoidal embedding of ``t * time_scale``."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        embedding_dim: int | None = None,
        time_scale: float = 999.0,
        max_positions: int = 10000,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dim = check_positive_int("dim", dim)  # data dimension D: inputs are (B, D)
        self.num_classes = check_positive_int("num_classes", num_classes)  # number K of classes: outputs are (B, K)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        hidden_dim = check_positive_int("hidden_dim", hidden_dim)  # width of every hidden layer
        num_layers = check_positive_int("num_layers", num_layers)  # number of residual blocks
        embedding_dim = hidden_dim if embedding_dim is None else embedding_dim
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)  # time features [hidden_dim]
        if self.embedding_dim < 4:
            raise ValueError(f"embedding_dim must be >= 4, got {self.embedding_dim}")
        self.time_scale = check_finite_positive("time_scale", time_scale)  # t is embedded as t * time_scale (VP's 999)
        self.max_positions = check_positive_int("max_positions", max_positions)  # longest period of the sinusoids
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.embedding_mlp = nn.Sequential(
            nn.Linear(self.embedding_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )  # time features -> hidden width
        self.input_proj = nn.Linear(self.dim, hidden_dim)  # data -> hidden width
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, float(dropout)) for _ in range(num_layers))
        self.output_proj = nn.Linear(hidden_dim, self.num_classes)  # hidden width -> class logits

    @classmethod
    def from_config(cls, config: Any) -> "MLPClassifier":
        """Build from ``config.data`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default: config_value(config, f"model.{name}", default)  # noqa: E731
        return cls(
            dim=config_value(config, "data.dim"),
            num_classes=config_value(config, "data.num_classes"),
            hidden_dim=field("nf", 128),
            num_layers=field("num_layers", 3),
            embedding_dim=field("embedding_dim", None),
            time_scale=field("time_scale", 999.0),
            dropout=field("dropout", 0.0),
        )

    def _check_inputs(self, x: Tensor, t: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point tensor of shape (B, {self.dim}), got {got}")
        if not isinstance(t, Tensor) or t.shape != (x.shape[0],) or not t.is_floating_point():
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a floating-point tensor of shape (B,) = ({x.shape[0]},), got {got}")

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self._check_inputs(x, t)
        dtype = self.input_proj.weight.dtype
        temb = self.embedding_mlp(sinusoidal_embedding(t * self.time_scale, self.embedding_dim, self.max_positions, dtype))
        h = self.input_proj(x.to(dtype))
        for block in self.blocks:
            h = block(h, temb)
        return self.output_proj(F.silu(h))
