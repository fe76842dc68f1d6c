"""scikit-learn's 8x8 digits (17 grey levels), DDPM++ (continuous), VP SDE: the README's main job.

A DDPM++ network (``ncsnpp`` with the settings of ``configs/vp/cifar10_ddpmpp_continuous.py``) sized for 8x8x1
images, trained, sampled and evaluated (test loss, test bits/dim with 17 levels) in a few minutes on 2 CPU cores.
"""

import ml_collections

from configs.default_embedded_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()
    training, data, model = config.training, config.data, config.model
    training.batch_size = 64
    training.n_iters = 2000  # about 3 minutes on 2 CPU cores
    training.snapshot_freq = 2000  # one numbered checkpoint (checkpoint_1.pth) and sample grid, at the end
    data.dataset = "digits"
    data.image_size = 8
    data.num_channels = 1
    data.random_flip = False
    model.ch_mult = (1, 2)  # 8x8 and 4x4 feature maps
    model.num_res_blocks = 1
    model.attn_resolutions = ()  # attention at 4x4 costs time and does not help here
    return config
