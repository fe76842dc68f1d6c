"""The log-mel spectrogram of a waveform, as the ``'log_mel'`` condition map (WaveGrad's and DiffWave's conditioning).

WaveGrad (Chen et al. 2021, Sec. 4) and DiffWave (Kong et al. 2021, Sec. 3.2) generate a waveform given its
log-mel spectrogram. :class:`LogMel` computes it in torch, with no parameters: the short-time Fourier transform
(Hann window of ``n_fft`` samples, hop ``hop``, frames centred on samples ``0, hop, 2 hop, ...`` with reflected
edges), the power of each bin, a bank of ``n_mels`` triangular filters equally spaced on the mel scale ``m(f) =
2595 log10(1 + f / 700)`` (O'Shaughnessy's formula, as HTK) between ``f_min`` and ``f_max``, each rising from the
previous centre to its own and falling to the next, and the natural log of the filtered power floored at
``log_floor``. A waveform ``(B, 1, L)`` gives ``(B, n_mels, 1 + L // hop)``.

Config (read by :meth:`LogMel.from_config`): ``config.data.sample_rate`` [8000], ``config.model.n_mels`` [40],
``model.mel_fft`` [256], ``model.mel_hop`` [64]; ``config.model.conditioning = "log_mel"`` selects it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from base_lib.checks import check_finite_positive, check_positive_int
from base_lib.config import config_value

from .conditioning import ConditionMap, register_condition


def hz_to_mel(f: Tensor | float) -> Tensor:
    """``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """The inverse of :func:`hz_to_mel`: ``700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular filters ``(n_mels, n_fft // 2 + 1)`` float64 over the FFT bins ``k sample_rate / n_fft``: filter
    ``i`` rises linearly from the mel point ``i`` to ``i + 1`` and falls to ``i + 2`` (``n_mels + 2`` points equally
    spaced in mel from ``f_min`` to ``f_max``, default Nyquist); peak 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel filters need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}, {sample_rate}")
    points = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    low, centre, high = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None] - low) / (centre - low)
    falling = (high - bins[None]) / (high - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


@register_condition("log_mel")
class LogMel(ConditionMap):
    """Waveforms ``(B, 1, L)`` to their log-mel spectrograms ``(B, n_mels, 1 + L // hop)`` (module docstring)."""

    def __init__(self, sample_rate: int = 8000, n_mels: int = 40, n_fft: int = 256, hop: int = 64,
                 f_min: float = 0.0, f_max: float | None = None, log_floor: float = 1e-5):
        super().__init__()
        self.sample_rate = check_positive_int("sample_rate", sample_rate)  # Hz of the waveforms
        self.n_mels = check_positive_int("n_mels", n_mels)  # filters (rows of the spectrogram)
        self.n_fft = check_positive_int("mel_fft", n_fft)  # STFT window length
        self.hop = check_positive_int("mel_hop", hop)  # samples between frames
        self.log_floor = check_finite_positive("log_floor", log_floor)  # power floor before the log
        # fixed tables, not state: left out of the network's state_dict (persistent=False)
        self.register_buffer("filters", mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @classmethod
    def from_config(cls, config: Any) -> "LogMel":
        return cls(
            sample_rate=config_value(config, "data.sample_rate", 8000),
            n_mels=config_value(config, "model.n_mels", 40),
            n_fft=config_value(config, "model.mel_fft", 256),
            hop=config_value(config, "model.mel_hop", 64),
        )

    def signal_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(data_shape) != 2 or data_shape[0] != 1 or data_shape[1] <= self.n_fft // 2:
            raise ValueError(f"the 'log_mel' condition needs mono waveforms (1, L) with L > mel_fft / 2 = "
                             f"{self.n_fft // 2}, got shape {tuple(data_shape)}")
        return (self.n_mels, 1 + data_shape[1] // self.hop)

    def forward(self, x0: Tensor) -> Tensor:
        self.signal_shape(tuple(x0.shape[1:]))
        dtype = x0.dtype if x0.dtype in (torch.float32, torch.float64) else torch.float32
        spec = torch.stft(x0[:, 0].to(dtype), self.n_fft, self.hop, window=self.window.to(dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        mel = torch.einsum("mf,bft->bmt", self.filters.to(dtype), spec.abs().square())
        return torch.log(mel.clamp(min=self.log_floor)).to(x0.dtype)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, n_fft={self.n_fft}, hop={self.hop}"


def spectral_convergence(x: Tensor, reference: Tensor, n_fft: int = 256, hop: int = 64) -> Tensor:
    """``||S(x) - S(ref)||_F / ||S(ref)||_F`` per waveform ``(B,)``, ``S`` the STFT magnitude (Hann, centred)."""
    window = torch.hann_window(n_fft, dtype=torch.float64, device=x.device)
    mag = lambda w: torch.stft(w[:, 0].to(torch.float64), n_fft, hop, window=window, center=True,  # noqa: E731
                               return_complex=True).abs()
    s, r = mag(x), mag(reference)
    return torch.linalg.norm((s - r).flatten(1), dim=1) / torch.linalg.norm(r.flatten(1), dim=1)


__all__ = ["LogMel", "mel_filterbank", "hz_to_mel", "mel_to_hz", "spectral_convergence"]
