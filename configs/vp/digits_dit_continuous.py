"""scikit-learn's 8x8 digits (17 grey levels), a DiT score network (Peebles & Xie, 2023), VP SDE, continuous time.

The README's main job (``configs/vp/digits_ddpmpp_continuous.py``: data, SDE, loss, optimizer, EMA, sampler and
evaluation) with the U-Net replaced by a diffusion transformer of about the same number of parameters (``dit``:
~0.72 M against DDPM++'s 0.72 M): 2x2 patches (16 tokens of an 8x8 digit), hidden size 96, 4 adaLN-Zero blocks of 4
heads. ``training.n_iters`` gives it the wall time of DDPM++'s 2000 steps on the same machine
(``benchmarks/dit_vs_ddpmpp.py`` measures the ratio of their step times: 1.30, so 2600 DiT steps).
"""

import ml_collections

from configs.vp.digits_ddpmpp_continuous import get_config as get_digits_config


def get_config() -> ml_collections.ConfigDict:
    config = get_digits_config()
    training, model = config.training, config.model
    training.n_iters = 2600  # DDPM++'s 2000 steps x its step-time ratio to DiT's, 1.30: the same training time
    training.snapshot_freq = training.n_iters  # one numbered checkpoint (checkpoint_1.pth), at the end
    model.name = "dit"
    model.nf = 96  # hidden size d of every token
    model.patch_size = 2  # 2x2 patches: 16 tokens
    model.depth = 4  # adaLN-Zero transformer blocks
    model.num_heads = 4  # 24 features per head
    model.mlp_ratio = 4.0  # MLP width 4 d
    return config
