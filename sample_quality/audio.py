"""Sample quality of waveforms: spectra and pitch of generated notes against reference notes.

* :func:`log_power_spectrum`: each waveform's mean log-power spectrum over Hann-windowed frames, in dB.
* :func:`log_spectrum_distance`: the root-mean-square difference (dB, over frequency bins) between the *average*
  log-power spectra of two sets: zero when the sets have the same spectral envelope on average.
* :func:`estimate_f0`: the fundamental frequency of each waveform from its normalised autocorrelation: the
  first lag (shortest period) in ``[sample_rate / f_max, sample_rate / f_min]`` whose peak reaches
  :data:`F0_PEAK_FRACTION` of the highest one (taking the highest alone confuses a period with its multiples,
  an octave error), refined by a parabola through the peak and its neighbours.
* :func:`pitch_distances`: the Wasserstein-1 distance (in semitones) between the pitch distributions of two sets,
  and the total-variation distance between their histograms over the nearest equal-tempered notes.
* :func:`audio_metrics`: the above between samples and test waveforms, each beside the same figure between
  training and test waveforms of the same count (the noise floor: what two finite samples of the data give).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SPECTRUM_FFT = 256  # frame length of the spectra (32 ms at 8 kHz)
SPECTRUM_HOP = 64  # hop between frames
F0_MIN, F0_MAX = 60.0, 1000.0  # Hz: the pitch search range
F0_PEAK_FRACTION = 0.85  # a shorter period is taken when its autocorrelation peak reaches this share of the highest
POWER_FLOOR = 1e-10  # added to the power before the log (about -100 dB)


def _waveforms(x: Tensor) -> Tensor:
    """``(N, 1, L)`` or ``(N, L)`` as float64 ``(N, L)`` on the CPU."""
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 2:
        raise ValueError(f"waveforms must be (N, 1, L) or (N, L), got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def log_power_spectrum(x: Tensor, n_fft: int = SPECTRUM_FFT, hop: int = SPECTRUM_HOP) -> Tensor:
    """Mean over frames of ``10 log10(|STFT|^2 + floor)`` per waveform, ``(N, n_fft // 2 + 1)`` (Hann window)."""
    w = _waveforms(x)
    if w.shape[1] < n_fft:
        raise ValueError(f"waveforms must hold at least n_fft={n_fft} samples, got {w.shape[1]}")
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(w, n_fft, hop, window=window, center=False, return_complex=True)
    return (10.0 * torch.log10(spec.abs().square() + POWER_FLOOR)).mean(dim=-1)


def log_spectrum_distance(x: Tensor, y: Tensor, n_fft: int = SPECTRUM_FFT, hop: int = SPECTRUM_HOP) -> float:
    """RMS over frequency of the difference of the average log-power spectra of the sets ``x`` and ``y`` (dB)."""
    difference = log_power_spectrum(x, n_fft, hop).mean(0) - log_power_spectrum(y, n_fft, hop).mean(0)
    return float(difference.square().mean().sqrt())


def estimate_f0(x: Tensor, sample_rate: int, f_min: float = F0_MIN, f_max: float = F0_MAX) -> Tensor:
    """The fundamental frequency (Hz) of each waveform ``(N,)`` float64 (module docstring); NaN for a silent one."""
    w = _waveforms(x)
    w = w - w.mean(dim=1, keepdim=True)
    n = w.shape[1]
    lo, hi = max(int(math.floor(sample_rate / f_max)), 1), min(int(math.ceil(sample_rate / f_min)), n - 2)
    if hi <= lo + 1:
        raise ValueError(f"waveforms of {n} samples at {sample_rate} Hz are too short for pitches down to {f_min} Hz")
    spectrum = torch.fft.rfft(w, 2 * n)
    acf = torch.fft.irfft(spectrum.abs().square(), 2 * n)[:, :n]
    energy = acf[:, :1]
    acf = acf / torch.where(energy > 0, energy, torch.ones_like(energy))
    acf = acf * n / (n - torch.arange(n, dtype=acf.dtype))  # unbiased: each lag by its number of products
    f0 = torch.full((w.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(w.shape[0]):
        r = acf[i].numpy()
        if energy[i, 0] <= 0:
            continue
        segment = r[lo : hi + 1]
        peaks = [k for k in range(1, len(segment) - 1) if segment[k] >= segment[k - 1] and segment[k] > segment[k + 1]]
        if not peaks:
            continue
        best = max(segment[k] for k in peaks)
        k = next(k for k in peaks if segment[k] >= F0_PEAK_FRACTION * best) + lo
        a, b, c = r[k - 1], r[k], r[k + 1]
        curvature = a - 2 * b + c
        shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
        f0[i] = sample_rate / (k + shift)
    return f0


def hz_to_midi(f: Tensor) -> Tensor:
    """``69 + 12 log2(f / 440)``: the pitch in semitones (MIDI note numbers)."""
    return 69.0 + 12.0 * torch.log2(f / 440.0)


def pitch_distances(f_x: Tensor, f_y: Tensor) -> dict[str, float]:
    """Between two sets of fundamental frequencies (Hz; NaNs left out and counted): ``pitch_w1_semitones`` (the
    Wasserstein-1 distance of the pitch distributions) and ``note_histogram_tv`` (total variation between the
    histograms of the nearest notes), with ``unpitched_fraction`` of the first set."""
    from scipy.stats import wasserstein_distance

    m_x, m_y = hz_to_midi(f_x), hz_to_midi(f_y)
    ok_x, ok_y = m_x[torch.isfinite(m_x)], m_y[torch.isfinite(m_y)]
    result = {"unpitched_fraction": float(1.0 - len(ok_x) / max(len(m_x), 1))}
    if len(ok_x) == 0 or len(ok_y) == 0:
        return {**result, "pitch_w1_semitones": float("nan"), "note_histogram_tv": float("nan")}
    result["pitch_w1_semitones"] = float(wasserstein_distance(ok_x.numpy(), ok_y.numpy()))
    notes_x, notes_y = torch.round(ok_x).long(), torch.round(ok_y).long()
    low, high = int(min(notes_x.min(), notes_y.min())), int(max(notes_x.max(), notes_y.max()))
    h_x = torch.bincount(notes_x - low, minlength=high - low + 1).double() / len(notes_x)
    h_y = torch.bincount(notes_y - low, minlength=high - low + 1).double() / len(notes_y)
    result["note_histogram_tv"] = float(0.5 * (h_x - h_y).abs().sum())
    return result


def audio_metrics(samples: Tensor, test: Tensor, train: Tensor | None, sample_rate: int) -> dict[str, float]:
    """Log-spectrum distance and pitch distances of ``samples`` to the ``test`` waveforms; with ``train`` (the same
    count of training waveforms), the same figures of ``train`` to ``test`` as ``*_floor``."""
    f_test = estimate_f0(test, sample_rate)
    result = {"log_spectrum_distance_db": log_spectrum_distance(samples, test),
              **pitch_distances(estimate_f0(samples, sample_rate), f_test)}
    if train is not None:
        floor = {"log_spectrum_distance_db": log_spectrum_distance(train, test),
                 **pitch_distances(estimate_f0(train, sample_rate), f_test)}
        result.update({f"{name}_floor": value for name, value in floor.items()})
    return result
