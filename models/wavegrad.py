"""A 1-D score network for waveforms: DiffWave's dilated residual stack with WaveGrad's FiLM noise conditioning.

``model(x, labels)`` or, conditioned on a signal, ``model(x, labels, c)``: ``x`` of shape ``(B, C, L)`` for any
length ``L`` (every convolution keeps the length), ``labels`` ``(B,)`` as the parameterization of
:class:`models.ScoreModel` gives them (``999 t`` for VP / sub-VP, the noise scale ``sigma`` for VE, EDM's
``ln(sigma) / 4``).

The design follows two papers:

* DiffWave (Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis", Sec. 3 and Fig. 2): a
  1x1 input convolution, a stack of residual layers whose dilated convolutions (kernel 3, dilation ``2^(i mod
  cycle)``, so the receptive field grows to ``2^cycle`` samples per cycle) feed a gated ``tanh * sigmoid`` unit,
  each layer returning a residual (added to its input, scaled by ``1/sqrt 2``) and a skip output (summed over the
  layers, scaled by ``1/sqrt(layers)``), then two 1x1 output convolutions. The last one starts at zero, so an
  untrained network outputs zero.
* WaveGrad (Chen et al. 2021, "WaveGrad: Estimating Gradients for Waveform Generation", Sec. 3.2 and Fig. 3-4):
  the network is conditioned on the *continuous* noise level through FiLM, a per-channel scale and shift
  ``gamma * h + beta`` of the features. Here the noise-level embedding (sinusoidal, of the labels themselves, or
  random Fourier features of ``log sigma``) goes through an MLP, and every layer turns it into ``(1 + gamma,
  beta)`` for its dilated convolution's output.

A spectrogram (or any per-frame signal ``c`` of shape ``(B, F, frames)``, e.g. the ``'log_mel'`` map of
:mod:`models.mel`) conditions the network when a ``condition_map`` is given (``config.model.conditioning``): a
kernel-3 convolution over frames, linear interpolation to the waveform's ``L`` samples (the frames' centres
spread evenly over the waveform, as WaveGrad's upsampling blocks and DiffWave's transposed convolutions do with
learned filters), and a 1x1 projection added before each gated unit (DiffWave's local conditioner).

Config (read only by :meth:`WaveGradNet.from_config`; defaults in brackets): ``config.data.num_channels`` [1];
``config.model.name = "wavegrad"``, ``nf`` [64] residual channels, ``num_layers`` [10], ``dilation_cycle`` [10],
``embedding_type`` [``"positional"``] ``"positional"`` | ``"fourier"``, ``embedding_dim`` [128],
``fourier_scale`` [16], ``scale_by_sigma`` [False], ``conditioning`` (unset: unconditional; ``condition_channels``
[64] of the upsampled signal), ``fold`` [1].

``fold = f > 1`` stacks each run of ``f`` consecutive samples into channels before the stack (and unstacks the
output): the layers then run at ``1/f`` of the sample rate with ``f`` times the receptive field, as WaveGrad's
downsampling blocks do with learned strided convolutions; on a CPU this is what makes a network of 2048-sample
notes train in minutes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.checks import check_finite_positive, check_positive_int
from base_lib.config import config_value

from .conditioning import ConditionMap, check_signal, condition_map_from_config
from .embeddings import GaussianFourierProjection, sinusoidal_embedding
from .registry import register_model

WAVEGRAD_EMBEDDINGS = ("positional", "fourier")


def _default(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it is ``None`` (an absent field or an unset placeholder)."""
    return default if value is None else value


class ResidualLayer(nn.Module):
    """One DiffWave layer with FiLM: ``y = FiLM(conv_d(h)) [+ W c]``, ``z = tanh(y_a) sigmoid(y_b)``, then the
    residual ``(h + R z) / sqrt 2`` and the skip output ``S z``."""

    def __init__(self, channels: int, dilation: int, embedding_dim: int, condition_channels: int | None):
        super().__init__()
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)  # length-preserving
        self.film = nn.Linear(embedding_dim, 4 * channels)  # noise embedding -> (gamma, beta) of 2C features
        nn.init.zeros_(self.film.weight)  # FiLM starts as the identity: scale 1 + 0, shift 0
        nn.init.zeros_(self.film.bias)
        self.condition = (
            nn.Conv1d(condition_channels, 2 * channels, 1) if condition_channels is not None else None
        )  # upsampled signal -> its contribution to the gate inputs
        self.out = nn.Conv1d(channels, 2 * channels, 1)  # gated features -> (residual, skip)

    def forward(self, h: Tensor, embedding: Tensor, signal: Tensor | None) -> tuple[Tensor, Tensor]:
        gamma, beta = self.film(embedding)[:, :, None].chunk(2, dim=1)
        y = self.dilated(h) * (1.0 + gamma) + beta
        if self.condition is not None:
            y = y + self.condition(signal)
        a, b = y.chunk(2, dim=1)
        residual, skip = self.out(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
        return (h + residual) * math.sqrt(0.5), skip


class SignalUpsampler(nn.Module):
    """Per-frame features ``(B, F, frames)`` to per-sample features ``(B, channels, L)``: a kernel-3 convolution
    over frames, then linear interpolation to ``L`` samples."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, 3, padding=1)  # mixes neighbouring frames

    def forward(self, c: Tensor, length: int) -> Tensor:
        features = F.leaky_relu(self.conv(c), 0.4)
        return F.interpolate(features, size=length, mode="linear", align_corners=False)


@register_model(name="wavegrad")
class WaveGradNet(nn.Module):
    """Score network ``(x (B, C, L), labels (B,)[, c]) -> (B, C, L)`` for waveforms of any length (module
    docstring). ``embedding_type="fourier"`` embeds ``log(labels)`` and so takes noise scales (``label_kinds``
    ``("sigma",)``); ``"positional"`` embeds the labels themselves and takes any. ``scale_by_sigma`` divides the
    output by the labels (VE's ``sigma``, with the Fourier embedding), as NCSN++ does."""

    def __init__(
        self,
        channels: int = 1,
        residual_channels: int = 64,
        num_layers: int = 10,
        dilation_cycle: int = 10,
        embedding_type: str = "positional",
        embedding_dim: int = 128,
        fourier_scale: float = 16.0,
        scale_by_sigma: bool = False,
        condition_map: ConditionMap | None = None,
        condition_features: int | None = None,
        condition_channels: int = 64,
        fold: int = 1,
    ):
        super().__init__()
        self.channels = check_positive_int("channels", channels)  # waveform channels C (1: mono)
        self.fold = check_positive_int("fold", fold)  # consecutive samples stacked as channels (1: none)
        width = check_positive_int("residual_channels", residual_channels)  # features of every layer
        layers = check_positive_int("num_layers", num_layers)  # residual layers
        cycle = check_positive_int("dilation_cycle", dilation_cycle)  # dilations 1, 2, ..., 2^(cycle - 1), repeated
        if embedding_type not in WAVEGRAD_EMBEDDINGS:
            raise ValueError(f"embedding_type must be one of {WAVEGRAD_EMBEDDINGS}, got {embedding_type!r}")
        self.embedding_type = embedding_type  # "positional": of the labels; "fourier": of log(labels)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)  # noise-level features
        if self.embedding_dim < 4 or self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be an even number >= 4, got {self.embedding_dim}")
        self.scale_by_sigma = bool(scale_by_sigma)  # divide the output by the labels (noise scales)
        if self.scale_by_sigma and embedding_type != "fourier":
            raise ValueError("scale_by_sigma=True divides by the labels, which must be noise scales: it needs "
                             "embedding_type='fourier'")
        self.fourier = (
            GaussianFourierProjection(self.embedding_dim // 2, check_finite_positive("fourier_scale", fourier_scale))
            if embedding_type == "fourier" else None
        )  # fixed random features of log sigma
        self.embedding_mlp = nn.Sequential(
            nn.Linear(self.embedding_dim, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width), nn.SiLU()
        )  # noise-level features -> the FiLM input of every layer
        if condition_map is not None and not isinstance(condition_map, ConditionMap):
            raise ValueError(f"condition_map must be a models.ConditionMap or None, got {type(condition_map).__name__}")
        self.condition_map = condition_map  # the signal map (e.g. log-mel), None: unconditional
        conditioned = condition_map is not None
        if conditioned:
            condition_features = check_positive_int("condition_features", condition_features)  # signal rows F
            condition_channels = check_positive_int("condition_channels", condition_channels)
        self.upsampler = SignalUpsampler(condition_features, condition_channels) if conditioned else None
        self.input = nn.Conv1d(self.channels * self.fold, width, 1)  # folded waveform -> features
        self.layers = nn.ModuleList(
            ResidualLayer(width, 2 ** (i % cycle), 4 * width, condition_channels if conditioned else None)
            for i in range(layers)
        )
        self.skip_out = nn.Conv1d(width, width, 1)  # summed skips -> features
        self.output = nn.Conv1d(width, self.channels * self.fold, 1)  # features -> folded waveform; zero at first
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @classmethod
    def from_config(cls, config: Any) -> "WaveGradNet":
        """Build from ``config.data`` / ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default: config_value(config, f"model.{name}", default)  # noqa: E731
        condition_map = condition_map_from_config(config)
        features = None
        if condition_map is not None:
            length = config_value(config, "data.audio_length", None)
            if length is None:
                raise ValueError("a conditioned wavegrad network needs config.data.audio_length (waveform data)")
            channels = config_value(config, "data.num_channels", 1)
            features = condition_map.signal_shape((channels, length))[0]
        return cls(
            channels=config_value(config, "data.num_channels", 1),
            residual_channels=field("nf", 64),
            num_layers=field("num_layers", 10),
            dilation_cycle=field("dilation_cycle", 10),
            embedding_type=field("embedding_type", "positional"),
            embedding_dim=_default(field("embedding_dim", None), 128),
            fourier_scale=field("fourier_scale", 16.0),
            scale_by_sigma=field("scale_by_sigma", False),
            condition_map=condition_map,
            condition_features=features,
            condition_channels=_default(field("condition_channels", None), 64),
            fold=_default(field("fold", None), 1),
        )

    @property
    def label_kinds(self) -> tuple[str, ...] | None:
        """``("sigma",)`` with the Fourier embedding of ``log(labels)``; ``None`` (any label) with the positional one."""
        return ("sigma",) if self.embedding_type == "fourier" else None

    def _embed(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        if self.fourier is not None:
            return self.fourier(torch.log(labels.to(dtype)))
        return sinusoidal_embedding(labels, self.embedding_dim, dtype=dtype)

    def _fold(self, x: Tensor) -> Tensor:
        """``(B, C, L) -> (B, C f, ceil(L / f))``: each run of ``f`` samples (zero-padded at the end) as channels."""
        if self.fold == 1:
            return x
        b, c, length = x.shape
        x = F.pad(x, (0, (-length) % self.fold))
        return x.view(b, c, -1, self.fold).transpose(2, 3).reshape(b, c * self.fold, -1)

    def _unfold(self, y: Tensor, length: int) -> Tensor:
        """The inverse of :meth:`_fold`, cropped to ``length`` samples."""
        if self.fold == 1:
            return y
        b, _, frames = y.shape
        return y.view(b, self.channels, self.fold, frames).transpose(2, 3).reshape(b, self.channels, -1)[..., :length]

    def forward(self, x: Tensor, labels: Tensor, c: Tensor | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[1] != self.channels or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point waveform tensor (B, {self.channels}, L), got {got}")
        if not isinstance(labels, Tensor) or labels.shape != (x.shape[0],):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must have shape (B,) = ({x.shape[0]},), one per waveform; got {got}")
        if self.fourier is not None and not labels.is_floating_point():
            raise ValueError(f"labels must be floating-point noise scales for embedding_type='fourier', got {labels.dtype}")
        signal = None
        if self.condition_map is not None:
            c = check_signal(c, x, self.condition_map, name="c")
            signal = self.upsampler(c.to(x.dtype), x.shape[-1])  # per sample; per folded frame below
        elif c is not None:
            raise ValueError("c: this wavegrad network is unconditional (config.model.conditioning unset)")
        dtype = self.input.weight.dtype
        embedding = self.embedding_mlp(self._embed(labels, dtype))
        folded = self._fold(x)
        if signal is not None:
            signal = F.interpolate(signal, size=folded.shape[-1], mode="linear", align_corners=False)
        h = F.silu(self.input(folded))
        skips = torch.zeros_like(h)
        for layer in self.layers:
            h, skip = layer(h, embedding, signal)
            skips = skips + skip
        out = self.output(F.silu(self.skip_out(skips * math.sqrt(1.0 / len(self.layers)))))
        out = self._unfold(out, x.shape[-1])
        if self.scale_by_sigma:
            out = out / labels.to(out.dtype)[:, None, None]
        return out
