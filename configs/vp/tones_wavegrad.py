"""Procedural notes (2048 samples at 8 kHz), the 1-D ``wavegrad`` score network, VP SDE, continuous time, EDM's
preconditioning (``configs/default_audio_configs.py``): trains (4000 steps, about 20 minutes on 2 idle CPU cores),
samples (DPM-Solver, 25 evaluations) and evaluates (test loss, log-spectrum and pitch distances to the test split)
in one ``main.py --mode train`` job. Samples are written as ``.wav`` files with a spectrogram picture."""

import ml_collections

from configs.default_audio_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    return get_default_configs()
