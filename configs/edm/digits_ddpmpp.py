"""scikit-learn's 8x8 digits, EDM (Karras et al. 2022) with the README main job's DDPM++ network.

``configs/vp/digits_ddpmpp_continuous.py`` with EDM's formulation in place of the VP SDE: the diffusion
``sigma(t) = t``, the preconditioning (``sigma_data`` 0.75, the standard deviation of the digits in ``[-1, 1]``),
EDM's loss (``ln sigma ~ N(-1.2, 1.2^2)``), the EMA by a half-life of 44k images (that of the VP job's
``ema_rate = 0.999`` at batch 64) with EDM's ramp-up, and EDM's Heun sampler on 18 noise levels (35 evaluations).
Network, batch, steps and learning rate are the VP job's, so the two train for the same time. The likelihood
integrates to ``sigma = 1e-3``, the noise level of the VP job's ``likelihood_eps``.
"""

from configs.default_edm_configs import with_edm_formulation
from configs.vp.digits_ddpmpp_continuous import get_config as get_vp_config


def get_config():
    # sigma_data: the standard deviation of the digits in [-1, 1]; half-life: that of ema_rate = 0.999 at batch 64
    config = with_edm_formulation(get_vp_config(), sigma_data=0.75, ema_halflife_images=44_000.0)
    config.eval.likelihood_eps = 1e-3
    return config
