"""Saving waveform samples: ``.wav`` files (``scipy.io.wavfile``, 16-bit PCM) and a PNG of their spectrograms.

Waveforms are ``(N, 1, L)`` in ``[-1, 1]`` (:mod:`data_lib.audio`). :func:`save_waveforms` writes the first
:data:`MAX_WAV_FILES` as ``sample_{i}.wav`` beside the picture and draws the first :data:`MAX_SPECTROGRAMS`
log-magnitude spectrograms (Hann window of :data:`SPECTROGRAM_FFT` samples, hop :data:`SPECTROGRAM_HOP`, in dB
relative to the loudest bin of each, floored at :data:`SPECTROGRAM_RANGE_DB` below it), with matplotlib when it
is installed and as a plain greyscale image with Pillow otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from base_lib.config import config_value
from base_lib.files import atomic_write

MAX_WAV_FILES = 8  # .wav files written per sample folder
MAX_SPECTROGRAMS = 8  # spectrograms drawn in the picture
SPECTROGRAM_FFT = 256  # frame of the pictured spectrograms (32 ms at 8 kHz)
SPECTROGRAM_HOP = 32  # hop between frames
SPECTROGRAM_RANGE_DB = 80.0  # dynamic range shown
DEFAULT_SAMPLE_RATE = 8000  # when the config does not say (data_lib.audio's default)


def sample_rate_of(config: Any) -> int:
    """``config.data.sample_rate`` (the data's default when the config has none)."""
    return int(config_value(config, "data.sample_rate", DEFAULT_SAMPLE_RATE) or DEFAULT_SAMPLE_RATE)


def _mono(samples: Tensor) -> np.ndarray:
    if samples.ndim != 3 or samples.shape[1] != 1:
        raise ValueError(f"waveforms must be (N, 1, L), got shape {tuple(samples.shape)}")
    x = torch.nan_to_num(samples.detach().to("cpu", torch.float64)[:, 0], nan=0.0)
    return x.clamp(-1.0, 1.0).numpy()


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> Path:
    """``waveform`` ``(L,)`` in ``[-1, 1]`` as a mono 16-bit PCM ``.wav``, written atomically: ``round(32768 x)``
    clipped to the int16 range, the inverse of the usual reading ``k / 32768`` (:func:`data_lib.audio.to_float`) to
    within half a level (a full one at ``x = 1``)."""
    from scipy.io import wavfile

    pcm = np.clip(np.round(np.clip(waveform, -1.0, 1.0) * 32768.0), -32768, 32767).astype(np.int16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: wavfile.write(file, int(sample_rate), pcm))
    return path


def spectrogram_db(waveform: np.ndarray, n_fft: int = SPECTROGRAM_FFT, hop: int = SPECTROGRAM_HOP) -> np.ndarray:
    """``(n_fft // 2 + 1, frames)``: ``20 log10 |STFT|`` relative to its maximum, floored at ``-SPECTROGRAM_RANGE_DB``."""
    x = torch.from_numpy(np.asarray(waveform, dtype=np.float64))
    n_fft = min(n_fft, len(x))
    spec = torch.stft(x, n_fft, min(hop, n_fft), window=torch.hann_window(n_fft, dtype=torch.float64),
                      center=True, return_complex=True).abs()
    db = 20.0 * torch.log10(spec + 1e-12)
    return (db - db.max()).clamp(min=-SPECTROGRAM_RANGE_DB).numpy()


def save_spectrograms(samples: Tensor, path: str | os.PathLike, sample_rate: int, title: str | None = None) -> Path:
    """A PNG of the spectrograms of the first :data:`MAX_SPECTROGRAMS` waveforms, stacked (time across, frequency
    up to Nyquist upwards)."""
    waves = _mono(samples)[:MAX_SPECTROGRAMS]
    images = [spectrogram_db(w) for w in waves]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return _save_spectrograms_pillow(images, path)
    duration = waves.shape[1] / sample_rate
    figure = Figure(figsize=(8.0, 1.2 * len(images) + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(images), 1, squeeze=False, sharex=True)[:, 0]
    for ax, image in zip(axes, images):
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0.0, duration, 0.0, sample_rate / 2000.0),
                  vmin=-SPECTROGRAM_RANGE_DB, vmax=0.0)
        ax.set_ylabel("kHz", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("seconds", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _save_spectrograms_pillow(images: list[np.ndarray], path: Path) -> Path:
    from PIL import Image

    rows = [np.flipud(((image + SPECTROGRAM_RANGE_DB) / SPECTROGRAM_RANGE_DB * 255.0).astype(np.uint8)) for image in images]
    gap = np.zeros((2, rows[0].shape[1]), dtype=np.uint8)
    stacked = np.concatenate([part for row in rows for part in (row, gap)][:-1])
    Image.fromarray(stacked).save(path)
    return path


def save_waveforms(samples: Tensor, picture: str | os.PathLike, sample_rate: int, title: str | None = None) -> Path:
    """The spectrogram PNG ``picture`` and ``sample_{i}.wav`` of the first :data:`MAX_WAV_FILES` waveforms in its
    folder; returns the picture's path."""
    picture = Path(picture)
    for i, waveform in enumerate(_mono(samples)[:MAX_WAV_FILES]):
        write_wav(picture.parent / f"sample_{i}.wav", waveform, sample_rate)
    return save_spectrograms(samples, picture, sample_rate, title)
