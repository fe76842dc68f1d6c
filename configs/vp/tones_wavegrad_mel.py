"""Procedural notes given their log-mel spectrograms (WaveGrad's vocoder task): ``configs/vp/tones_wavegrad.py`` with
``model.conditioning = "log_mel"`` (:mod:`models.mel`: 40 mel filters of a 256-sample STFT, hop 64, so 33 frames of a
2048-sample note); the network takes the spectrogram as upsampled FiLM-side conditioning, and jobs draw the
spectrograms of test notes to condition the samples on."""

import ml_collections

from configs.default_audio_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()
    model = config.model
    with config.unlocked():
        model.conditioning = "log_mel"
        model.n_mels = 40
        model.mel_fft = 256
        model.mel_hop = 64
        model.condition_channels = 32
    return config
