"""Waveform datasets: procedural harmonic notes (``tones``) and the ``.wav`` files of a folder (``wav_folder``).

A waveform is a "one-channel one-dimensional image": one example has shape ``(1, L)`` (``L`` samples at
``sample_rate`` Hz), continuous values in ``[-1, 1]`` (``num_levels`` is ``None``), already in the model's
coordinates. The data scaler is therefore the identity (``config.data.centered`` must be False: ``2 x - 1`` would
move silence to -1), and the likelihood is reported in nats, as for the toy points.

* ``tones``: each example is a function of ``(seed, split, index)`` only (numpy's ``SeedSequence``): a note of
  pitch ``f0 = 440 * 2^((m - 69) / 12)`` Hz with ``m`` uniform among :data:`TONE_NOTES` (the label is the note's
  index ``m - TONE_NOTES[0]``; ``f0`` is kept beside it), 2-5 harmonics below Nyquist with geometrically decaying
  amplitudes and random phases, a linear attack then an exponential decay, a slow sinusoidal vibrato of the phase,
  a little white noise, and a peak amplitude in ``[0.5, 0.9]``.
* ``wav_folder``: every ``.wav`` file under ``config.data.root`` (the ``train/`` and ``test/`` subfolders if there
  are, else every 10th file is a test file), read by ``scipy.io.wavfile``, averaged to mono, scaled to ``[-1, 1]``
  from its integer type, resampled to ``sample_rate`` by a polyphase filter when its rate differs (or refused with
  ``resample=False``), then cut into consecutive non-overlapping segments of ``L`` samples (a shorter tail is left
  out).

Config fields (``config.data``): ``dataset`` (``'tones'`` or ``'wav_folder'``), ``sample_rate`` [8000],
``audio_length`` [2048], ``num_channels`` [1] (mono only), ``seed`` [0], ``num_train`` / ``num_test``
[2000 / 200] (``tones``), ``root`` (``wav_folder``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from base_lib.config import config_value

from .base import InMemoryDataset, check_split

AUDIO_DATASETS = ("tones", "wav_folder")
DEFAULT_SAMPLE_RATE = 8000
DEFAULT_AUDIO_LENGTH = 2048
TONES_DEFAULT_SIZES = {"train": 2000, "test": 200}
#: the MIDI notes of ``tones`` (C4 .. B4, 261.6 .. 493.9 Hz): label ``k`` is note ``TONE_NOTES[k]``
TONE_NOTES = tuple(range(60, 72))
WAV_TEST_EVERY = 10  # without train/ and test/ subfolders, every 10th file (sorted) is a test file
_SPLIT_CODES = {"train": 0, "test": 1}


def midi_to_hz(note: float | np.ndarray) -> float | np.ndarray:
    """Equal temperament with A4 = MIDI 69 = 440 Hz: ``440 * 2^((note - 69) / 12)``."""
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


class AudioDataset(InMemoryDataset):
    """Waveforms ``(N, 1, L)`` float32 in ``[-1, 1]`` at ``sample_rate`` Hz, with the note ``labels`` (``(N,)``
    int64) and fundamental frequencies ``f0`` (``(N,)`` float64 Hz) where the data have them."""

    def __init__(self, name: str, split: str, data: Tensor, sample_rate: int, labels: Tensor | None = None,
                 f0: Tensor | None = None):
        if data.ndim != 3 or data.shape[1] != 1:
            raise ValueError(f"waveforms must be a tensor (N, 1, L), got {tuple(data.shape)}")
        super().__init__(name, split, data, None, labels)
        self.sample_rate = int(sample_rate)  # samples per second
        self.f0 = f0  # fundamental frequency of each example (Hz), or None


# ------------------------------------------------------------------ tones
def tone(rng: np.random.Generator, length: int, sample_rate: int) -> tuple[np.ndarray, int, float]:
    """One harmonic note drawn from ``rng``: ``(waveform (length,), label, f0)`` (module docstring)."""
    label = int(rng.integers(len(TONE_NOTES)))
    f0 = float(midi_to_hz(TONE_NOTES[label]))
    t = np.arange(length) / sample_rate
    vibrato_rate, vibrato_depth = rng.uniform(4.0, 7.0), rng.uniform(0.0, 0.006)  # Hz; relative frequency swing
    # instantaneous frequency f0 (1 + d sin(2 pi r t)): its phase integral, in cycles of f0
    cycles = f0 * (t + vibrato_depth * (1.0 - np.cos(2 * np.pi * vibrato_rate * t)) / (2 * np.pi * vibrato_rate))
    harmonics = min(int(rng.integers(2, 6)), int((sample_rate / 2) // (f0 * (1 + vibrato_depth))))
    ratio = rng.uniform(0.3, 0.7)  # amplitude ratio of successive harmonics
    phases = rng.uniform(0.0, 2 * np.pi, harmonics)
    wave = sum(ratio**k * np.sin(2 * np.pi * (k + 1) * cycles + phases[k]) for k in range(harmonics))
    attack, decay = rng.uniform(0.005, 0.03), rng.uniform(0.08, 0.4)  # seconds
    envelope = np.minimum(t / attack, 1.0) * np.exp(-np.maximum(t - attack, 0.0) / decay)
    wave = envelope * wave + rng.normal(0.0, 0.01, length)
    peak = rng.uniform(0.5, 0.9)
    return (peak * wave / np.abs(wave).max()).astype(np.float32), label, f0


def tones(split: str, n: int, length: int = DEFAULT_AUDIO_LENGTH, sample_rate: int = DEFAULT_SAMPLE_RATE,
          seed: int = 0) -> AudioDataset:
    """``n`` notes of ``split``; example ``i`` depends on ``(seed, split, i)`` only (so a larger ``n`` extends the
    split without changing its first examples)."""
    code = _SPLIT_CODES[check_split(split)]
    waves, labels, f0s = [], [], []
    for index in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**32, code, index]))
        wave, label, f0 = tone(rng, length, sample_rate)
        waves.append(wave)
        labels.append(label)
        f0s.append(f0)
    data = torch.from_numpy(np.stack(waves))[:, None]
    return AudioDataset("tones", split, data, sample_rate, torch.tensor(labels, dtype=torch.int64),
                        torch.tensor(f0s, dtype=torch.float64))


# ------------------------------------------------------------------ wav folders
def to_float(samples: np.ndarray) -> np.ndarray:
    """``scipy.io.wavfile`` samples as float64 mono in ``[-1, 1]``: integers divided by their full scale
    (unsigned 8-bit centred at 128), float kept; channels averaged."""
    if samples.dtype == np.uint8:
        x = (samples.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.integer):
        x = samples.astype(np.float64) / float(2 ** (8 * samples.dtype.itemsize - 1))
    elif np.issubdtype(samples.dtype, np.floating):
        x = samples.astype(np.float64)
    else:
        raise ValueError(f"unsupported .wav sample type {samples.dtype}")
    return x.mean(axis=1) if x.ndim == 2 else x


def read_wav(path: Path, sample_rate: int, resample: bool = True) -> np.ndarray:
    """The mono float64 waveform of ``path`` at ``sample_rate`` Hz; a file at another rate is resampled by
    ``scipy.signal.resample_poly`` (the exact rational ratio) or, with ``resample=False``, refused."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    try:
        rate, samples = wavfile.read(path)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: not a readable .wav file ({error})") from None
    x = to_float(samples)
    if rate != sample_rate:
        if not resample:
            raise ValueError(f"{path} is sampled at {rate} Hz, config.data.sample_rate is {sample_rate}")
        ratio = Fraction(sample_rate, rate)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return np.clip(x, -1.0, 1.0)


def list_wavs(root: Path) -> list[Path]:
    """Every ``*.wav`` file under ``root`` (recursively, case-insensitive suffix), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".wav")


def wav_folder(root: str | Path, split: str, length: int = DEFAULT_AUDIO_LENGTH,
               sample_rate: int = DEFAULT_SAMPLE_RATE, resample: bool = True) -> AudioDataset:
    """The ``split`` of the ``.wav`` files under ``root`` cut into segments of ``length`` samples (module
    docstring); ``ValueError`` naming ``config.data.root`` when the folder or its files are missing."""
    root = Path(root)
    check_split(split)
    if not root.is_dir():
        raise ValueError(f"config.data.root={str(root)!r} is not a folder of .wav files")
    if (root / "train").is_dir() and (root / "test").is_dir():
        files = list_wavs(root / split)
    else:
        every = list_wavs(root)
        files = [p for i, p in enumerate(every) if (i % WAV_TEST_EVERY == WAV_TEST_EVERY - 1) == (split == "test")]
    segments = []
    for path in files:
        x = read_wav(path, sample_rate, resample)
        count = len(x) // length
        segments.extend(x[: count * length].reshape(count, length))
    if not segments:
        raise ValueError(f"config.data.root={str(root)!r}: no .wav file of the {split} split holds {length} samples "
                         f"(config.data.audio_length) at {sample_rate} Hz")
    data = torch.from_numpy(np.stack(segments).astype(np.float32))[:, None]
    return AudioDataset("wav_folder", split, data, sample_rate)


# ------------------------------------------------------------------ from a config
def _positive(config: Any, field: str, default: int) -> int:
    value = config_value(config, f"data.{field}", default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"config.data.{field} must be an integer >= 1, got {value!r}")
    return int(value)


def audio_shape(config: Any) -> tuple[int, int]:
    """One example's shape ``(1, config.data.audio_length)``; a one-line ``ValueError`` for another channel count
    or a length too short to hold a note."""
    if _positive(config, "num_channels", 1) != 1:
        raise ValueError(f"config.data.num_channels must be 1 for {config.data.dataset} (mono waveforms), got "
                         f"{config.data.num_channels}")
    length = _positive(config, "audio_length", DEFAULT_AUDIO_LENGTH)
    if length < 16:
        raise ValueError(f"config.data.audio_length must be >= 16 samples, got {length}")
    return (1, length)


def audio_from_config(config: Any, split: str) -> AudioDataset:
    """The ``split`` of ``config.data.dataset`` (``'tones'`` or ``'wav_folder'``), its fields checked first."""
    name = str(config.data.dataset).lower()
    for flag in ("random_flip", "uniform_dequantization", "centered"):
        if config_value(config, f"data.{flag}", False):
            raise ValueError(f"config.data.{flag} must be False for {name}: waveforms are continuous values already "
                             "in [-1, 1]")
    length = audio_shape(config)[1]
    rate = _positive(config, "sample_rate", DEFAULT_SAMPLE_RATE)
    if name == "tones":
        if rate < 2000:
            raise ValueError(f"config.data.sample_rate must be >= 2000 Hz for tones (two harmonics of the highest "
                             f"note below Nyquist), got {rate}")
        split = check_split(split)
        n = _positive(config, "num_train" if split == "train" else "num_test", TONES_DEFAULT_SIZES[split])
        return tones(split, n, length, rate, int(config_value(config, "data.seed", 0)))
    root = config_value(config, "data.root", None)
    if not root:
        raise ValueError("config.data.root must name the local folder of .wav files for wav_folder")
    return wav_folder(root, split, length, rate)
