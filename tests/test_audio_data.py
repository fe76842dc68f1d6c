"""Waveform data (:mod:`data_lib.audio`), its sample metrics (:mod:`sample_quality.audio`) and the files written for
samples (:mod:`jobs.audio`): determinism per seed and split, ``.wav`` round trips through scipy, pitch estimates
against the notes' known frequencies, and one-line errors for bad configs."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
import torch
from scipy.io import wavfile

import data_lib
from data_lib.audio import TONE_NOTES, midi_to_hz, to_float
from jobs.audio import save_waveforms, write_wav
from sample_quality.audio import estimate_f0, hz_to_midi, log_spectrum_distance, pitch_distances


def _config(**data) -> ml_collections.ConfigDict:
    fields = {"dataset": "tones", "sample_rate": 8000, "audio_length": 512, "num_channels": 1, "num_train": 40,
              "num_test": 10, "seed": 0, "centered": False, "random_flip": False, "uniform_dequantization": False}
    fields.update(data)
    return ml_collections.ConfigDict({"data": fields})


def test_tones_are_determined_by_seed_split_and_index():
    a = data_lib.get_dataset(_config(), "train")
    b = data_lib.get_dataset(_config(num_train=60), "train")
    assert a.shape == (1, 512) and a.num_levels is None and len(a) == 40
    assert torch.equal(a.data, b.data[:40]), "a larger split extends the smaller one"
    assert torch.equal(a.labels, b.labels[:40]) and torch.equal(a.f0, b.f0[:40])
    test = data_lib.get_dataset(_config(), "test")
    other_seed = data_lib.get_dataset(_config(seed=1), "train")
    assert not torch.equal(test.data, a.data[:10]) and not torch.equal(other_seed.data, a.data)
    assert float(a.data.abs().max()) <= 0.9 + 1e-6 and a.data.dtype == torch.float32
    assert set(a.labels.tolist()) <= set(range(len(TONE_NOTES)))
    assert torch.allclose(a.f0, torch.as_tensor(midi_to_hz(np.array(TONE_NOTES)))[a.labels])


def test_pitch_estimates_recover_the_notes():
    """The autocorrelation estimate is within 0.1 semitone of every note's true f0 (vibrato swings the pitch by at
    most 0.6%, 0.1 semitone)."""
    ds = data_lib.tones("test", 60, length=2048)
    error = (hz_to_midi(estimate_f0(ds.data, 8000)) - hz_to_midi(ds.f0)).abs()
    assert float(error.max()) < 0.1, error


def test_pitch_and_spectrum_distances_against_exact_answers():
    rate = 8000
    t = torch.arange(1024, dtype=torch.float64) / rate
    sines = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in (220.0, 440.0, 880.0)])[:, None]
    assert torch.allclose(estimate_f0(sines, rate), torch.tensor([220.0, 440.0, 880.0], dtype=torch.float64), rtol=2e-3)
    # pitch sets an octave apart: W1 = 12 semitones; the note histograms share 440 Hz only: TV = 1/2
    d = pitch_distances(torch.tensor([220.0, 440.0]), torch.tensor([440.0, 880.0]))
    assert math.isclose(d["pitch_w1_semitones"], 12.0, rel_tol=1e-9) and d["note_histogram_tv"] == 0.5
    # the same waveforms scaled by 10: every log-power bin moves by 20 dB (a little noise keeps every bin's power
    # far above the 1e-10 floor of the log, whose effect is then below 1e-7 dB)
    noisy = sines + 0.01 * torch.randn(sines.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert math.isclose(log_spectrum_distance(10 * noisy, noisy), 20.0, rel_tol=1e-6)
    assert log_spectrum_distance(sines, sines) == 0.0


def test_wav_files_round_trip_through_scipy(tmp_path):
    rate = 8000
    wave = np.sin(np.linspace(0, 60, 1000)) * 0.8
    path = write_wav(tmp_path / "a.wav", wave, rate)
    read_rate, pcm = wavfile.read(path)
    assert read_rate == rate and pcm.dtype == np.int16
    assert np.abs(to_float(pcm) - wave).max() <= 1 / 32768 + 1e-12, "16-bit quantization: half a level at most"
    # a folder of files scipy wrote (int16 mono, float32 stereo, another rate): read back as segments
    folder = tmp_path / "wavs"
    folder.mkdir()
    segments = np.random.default_rng(0).uniform(-0.9, 0.9, (3, 256))
    wavfile.write(folder / "a.wav", rate, np.round(np.concatenate([segments[0], segments[1], segments[2][:100]]) * 32767).astype(np.int16))
    wavfile.write(folder / "b.wav", rate, np.stack([segments[2], segments[2]], axis=1).astype(np.float32))
    wavfile.write(folder / "c.wav", rate * 2, np.repeat(segments[0], 2).astype(np.float32))
    config = _config(dataset="wav_folder", root=str(folder), audio_length=256)
    train = data_lib.get_dataset(config, "train")
    assert train.shape == (1, 256) and len(train) == 2 + 1 + 1, "2 segments of a.wav (tail dropped), b.wav, c.wav"
    assert np.abs(train.data[0, 0].numpy() - segments[0]).max() < 1e-4
    assert np.abs(train.data[2, 0].numpy() - segments[2]).max() < 1e-6, "stereo averaged to mono"
    assert train.data[3].shape == (1, 256), "resampled from 16 kHz to 8 kHz"


def test_samples_are_saved_as_wav_and_spectrogram(tmp_path):
    samples = data_lib.tones("test", 3, length=1024).data
    png = save_waveforms(samples, tmp_path / "samples.png", 8000, title="three notes")
    assert png.exists() and png.stat().st_size > 1000
    files = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert files == ["sample_0.wav", "sample_1.wav", "sample_2.wav"]
    rate, pcm = wavfile.read(tmp_path / "sample_1.wav")
    assert rate == 8000 and np.abs(to_float(pcm) - samples[1, 0].numpy()).max() <= 1 / 32768 + 1e-6


@pytest.mark.parametrize("fields, message", [
    ({"centered": True}, r"config\.data\.centered must be False"),
    ({"num_channels": 2}, r"config\.data\.num_channels must be 1"),
    ({"audio_length": 8}, r"config\.data\.audio_length must be >= 16"),
    ({"sample_rate": 1000}, r"config\.data\.sample_rate must be >= 2000"),
    ({"num_train": 0}, r"config\.data\.num_train must be an integer >= 1"),
    ({"dataset": "wav_folder"}, r"config\.data\.root must name"),
    ({"dataset": "wav_folder", "root": "/nonexistent/folder"}, r"config\.data\.root=.* is not a folder"),
])
def test_bad_configs_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as error:
        data_lib.get_dataset(_config(**fields), "train")
    assert "\n" not in str(error.value)


def test_a_file_at_another_rate_is_refused_when_resampling_is_off(tmp_path):
    wavfile.write(tmp_path / "x.wav", 16000, np.zeros(512, dtype=np.int16))
    with pytest.raises(ValueError, match="sampled at 16000 Hz, config.data.sample_rate is 8000"):
        data_lib.read_wav(tmp_path / "x.wav", 8000, resample=False)
