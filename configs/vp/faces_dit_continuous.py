"""scikit-image's ``lfw_subset`` faces (25x25 greyscale, 256 levels), a DiT score network (Peebles & Xie, 2023), VP
SDE, continuous time.

``configs/vp/faces_ddpmpp_continuous.py`` (data, SDE, loss, optimizer, sampler, evaluation) with the U-Net replaced
by a diffusion transformer of about the same number of parameters (``dit``: ~0.25 M against DDPM++'s 0.23 M). 25 is
odd: the 2x2 patches cover the face zero-padded to 26x26 (169 tokens), and the output is cropped back to 25x25.
Every token attends to every other, the global mixing the U-Net gets from its attention at 25x25. Only 80 training
faces: expect blurry faces, not fidelity.
"""

import ml_collections

from configs.vp.faces_ddpmpp_continuous import get_config as get_faces_config


def get_config() -> ml_collections.ConfigDict:
    config = get_faces_config()
    model = config.model
    model.name = "dit"
    model.nf = 64  # hidden size d of every token
    model.patch_size = 2  # 2x2 patches of the face padded to 26x26: 13 x 13 = 169 tokens
    model.depth = 3  # adaLN-Zero transformer blocks
    model.num_heads = 4  # 16 features per head
    model.mlp_ratio = 4.0  # MLP width 4 d
    return config
