"""SR3 (Saharia et al. 2021) on scikit-learn's digits: 2x super-resolution, 8x8 images from their 4x4 block means.

The DDPM++ network and VP SDE of ``configs/vp/digits_ddpmpp_continuous.py``, conditioned on the low-resolution
image (``model.conditioning = 'low_resolution'``, :class:`models.conditioning.LowResolution`): the 2x2 block means
upsampled back to 8x8 by repetition and concatenated to the noisy input. Training pairs each image with its own
low-resolution version; sampling (``--mode sample`` / ``eval``, the snapshots) draws the conditions from the test
split and reports the PSNR of the samples against their originals. The conditional bits/dim (``eval.enable_bpd=True``)
are off, as SR3 reports PSNR. A few minutes on 2 CPU cores.
"""

import ml_collections

from configs.vp.digits_ddpmpp_continuous import get_config as get_digits_config


def get_config() -> ml_collections.ConfigDict:
    config = get_digits_config()
    config.model.conditioning = "low_resolution"
    config.model.low_resolution_factor = 2  # 4x4 -> 8x8
    config.eval.enable_bpd = False  # the conditional bits/dim work (eval.enable_bpd=True) but are not what SR3 reports
    config.eval.num_samples = 128
    # the denoised estimate kept in the data's range and on the images with the given block means
    # (samplers.clip_denoised, samplers.consistent_denoised): both only move it towards the exact one
    config.sampling.clip_denoised = True
    config.sampling.measurement_consistency = True
    return config
