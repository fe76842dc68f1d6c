"""CIFAR-10 unconditional, EDM (Karras et al. 2022) with the DDPM++ network: EDM's SDE, preconditioning, loss,
EMA and sampler, in the settings of the paper's Table 7 ("config F" of the unconditional CIFAR-10 runs).

Reproduced: ``sigma(t) = t`` (``sigma_min`` 0.002, ``sigma_max`` 80), the preconditioning with ``sigma_data = 0.5``,
``ln sigma ~ N(-1.2, 1.2^2)`` with the weight ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, Adam at lr 1e-3
with a 10M-image linear ramp-up, batch 512, EMA with a 0.5M-image half-life and ramp-up ratio 0.05, 200M images,
Heun's sampler on 18 ``rho = 7`` noise levels (35 evaluations), no churn; the network: 128 channels, multipliers
(2, 2, 2), 4 residual blocks per resolution, attention at 16x16, dropout 0.13, positional embedding.

Not reproduced: EDM's non-leaking augmentation pipeline (probability 0.12, with the augmentation labels fed to the
network; our NCSN++ has no augmentation-label input), which the paper credits with FID 2.0 -> 1.97 at this
setting; EDM's 2-tap box resampling filter (here the reference DDPM++'s convolution resampling, ``fir = False``);
gradient clipping is off in EDM (``grad_clip = -1`` here) and its loss sums over pixels (``reduce_mean = False`` is
half that sum: the same minimizer, the learning rate absorbs the factor).
"""

from configs.default_edm_configs import with_edm_formulation
from configs.vp.cifar10_ddpmpp_continuous import get_config as get_vp_ddpmpp_config

IMAGES_PER_STEP = 512


def get_config():
    # the DDPM++ network, EDM's formulation (sigma_data 0.5 for images in [-1, 1], EMA half-life 0.5M images)
    config = with_edm_formulation(get_vp_ddpmpp_config(), sigma_data=0.5, ema_halflife_images=500_000.0)

    training = config.training
    training.batch_size = IMAGES_PER_STEP
    training.n_iters = 200_000_000 // IMAGES_PER_STEP  # 200M images
    training.reduce_mean = False

    config.data.random_flip = False  # EDM's flips come from its augmentation pipeline, which is not reproduced

    model = config.model
    model.ch_mult = (2, 2, 2)
    model.dropout = 0.13  # 128 channels, 4 blocks, attention at 16x16, positional embedding (of c_noise): as DDPM++

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 10_000_000 // IMAGES_PER_STEP  # EDM's 10M-image learning-rate ramp-up
    optim.grad_clip = -1.0
    return config
