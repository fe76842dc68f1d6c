"""scikit-image's ``lfw_subset`` faces (25x25 greyscale, 256 levels), DDPM++ (continuous), VP SDE.

The DDPM++ settings of ``configs/vp/cifar10_ddpmpp_continuous.py`` (``ncsnpp`` network, positional time
embedding, BigGAN residual blocks, no FIR, no progressive paths) sized for ``(1, 25, 25)`` images and a few
minutes of training on 2 CPU cores. The dataset has one fixed resolution, 25x25, and no resizing: 25 is odd, so
the U-Net cannot down-sample (``image_size`` must be divisible by ``2^(len(ch_mult) - 1)``); the network works
at the full 25x25 resolution only (``ch_mult = (1,)``), with two residual blocks per side and self-attention at
25x25 (625 positions) for a global receptive field. There are only 80 training faces and 20 test faces
(``data_lib.embedded.faces``): batches of 16 and a short run; expect blurry faces, not fidelity.
"""

import ml_collections

from configs.default_embedded_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()
    training, data, model = config.training, config.data, config.model
    training.batch_size = 16  # 80 training faces: 5 steps per epoch
    training.n_iters = 1000  # about 0.3 s per step on 2 CPU cores: 5 minutes
    training.snapshot_freq = 1000  # one numbered checkpoint (checkpoint_1.pth) and sample grid, at the end
    data.dataset = "faces"
    data.image_size = 25  # the only size the dataset has
    data.num_channels = 1
    data.random_flip = True  # faces are roughly left-right symmetric
    model.ch_mult = (1,)  # one resolution: 25 is odd, so no down-sampling is possible
    model.num_res_blocks = 2
    model.attn_resolutions = (25,)  # global mixing at the only resolution
    # trained on 80 faces the network extrapolates badly at high noise, and without the clip some probability-flow
    # trajectories grow into noise (benchmarks/results/sr3_faces.txt); the clip keeps the denoised estimate in [-1, 1]
    config.sampling.clip_denoised = True
    return config
