"""16x16 RGB patches of scikit-image's sample photos (256 levels), DDPM++ (continuous), VP SDE.

The DDPM++ settings of ``configs/vp/cifar10_ddpmpp_continuous.py`` (``ncsnpp`` network, positional time
embedding, BigGAN residual blocks, no FIR, no progressive paths) sized for ``(3, 16, 16)`` patches and a few
minutes of training on 2 CPU cores. The photos are first shrunk 4x (box filter), so a 16x16 patch shows a 64x64
region of the original; 300 patches per photo give 1500 training patches (5 photos) and 600 test patches (2
other photos: the split is by source photo, see ``data_lib.embedded.photo_patches``). Two resolutions, 16x16 and
8x8 (``ch_mult = (1, 2)``), attention at 8x8.
"""

import ml_collections

from configs.default_embedded_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()
    training, data, model = config.training, config.data, config.model
    training.batch_size = 32
    training.n_iters = 1000  # about 0.25 s per step on 2 CPU cores: 4 minutes
    training.snapshot_freq = 1000  # one numbered checkpoint (checkpoint_1.pth) and sample grid, at the end
    data.dataset = "photo_patches"
    data.image_size = 16  # patch side, in pixels of the shrunk photo
    data.num_channels = 3
    data.photo_downscale = 4  # shrink each photo 4x before cropping
    data.patches_per_image = 300  # crops per photo: 1500 train, 600 test
    data.seed = 0  # crop positions
    data.random_flip = True
    model.ch_mult = (1, 2)  # 16x16 and 8x8 feature maps
    model.num_res_blocks = 1
    model.attn_resolutions = (8,)
    return config
