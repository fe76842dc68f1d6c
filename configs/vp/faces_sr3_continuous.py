"""SR3 (Saharia et al. 2021) on scikit-image's faces: 2x super-resolution, 24x24 faces from their 12x12 block means.

The faces are 25x25; a 2x factor needs an even size, so every face is centre-cropped to 24x24
(``data.center_crop = 24``: the last row and column are dropped). With an even size the U-Net can down-sample once
(``ch_mult = (1, 2)``: 24x24 and 12x12 feature maps, attention at 12x12), unlike the unconditional faces config.
The network is conditioned on the low-resolution face (``model.conditioning = 'low_resolution'``), concatenated
to the noisy input. 80 training faces, 3000 steps: about 12 minutes on 2 CPU cores. The network is read through
EDM's preconditioning (``model.parameterization = 'edm'``, ``sigma_data = 0.5``; Karras et al. 2022): in the
reference's noise parameterization, trained on so few faces, some probability-flow trajectories diverge from
``t = 1`` on (0-3 of 20 samples at 3000 steps) and one sample had 19.9 dB PSNR against bicubic's 23.3; with EDM's
``c_skip x`` path one sample has 23.7 dB, 0.4 +- 0.15 dB above bicubic (``benchmarks/results/sr3_faces.txt``). The
samples also keep the denoised estimate in ``[-1, 1]`` and on the faces with the given block means
(``sampling.clip_denoised``, ``sampling.measurement_consistency``; they lifted the noise-parameterized network's
samples to 21.9 dB and change little here).
"""

import ml_collections

from configs.vp.faces_ddpmpp_continuous import get_config as get_faces_config


def get_config() -> ml_collections.ConfigDict:
    config = get_faces_config()
    training, data, model = config.training, config.data, config.model
    training.n_iters = 3000  # about 12 minutes
    training.snapshot_freq = 3000
    data.center_crop = 24  # 25 is odd: crop to an even side
    data.image_size = 24
    model.ch_mult = (1, 2)  # 24x24 and 12x12
    model.num_res_blocks = 2
    model.attn_resolutions = (12,)
    model.conditioning = "low_resolution"
    model.low_resolution_factor = 2  # 12x12 -> 24x24
    model.parameterization = "edm"  # EDM's preconditioning on the VP SDE (module docstring)
    model.sigma_data = 0.5  # EDM's value for images in [-1, 1] (the faces': 0.43)
    config.eval.enable_bpd = False  # the conditional bits/dim work (eval.enable_bpd=True) but are not what SR3 reports
    config.eval.batch_size = 20
    config.eval.num_samples = 20  # the 20 test faces
    # the denoised estimate kept in the data's range and on the images with the given block means
    # (samplers.clip_denoised, samplers.consistent_denoised): both only move it towards the exact one
    config.sampling.clip_denoised = True
    config.sampling.measurement_consistency = True
    return config
