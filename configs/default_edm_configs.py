"""EDM's formulation (Karras et al. 2022) on top of an experiment's config: the fields every ``configs/edm/`` file sets.

The diffusion ``sigma(t) = t`` on ``[0.002, 80]``, the preconditioning with ``sigma_data``, the loss's log-normal
noise levels ``ln sigma ~ N(-1.2, 1.2^2)``, the EMA by a half-life in images with ramp-up ratio 0.05, and EDM's
Heun sampler on 18 ``rho = 7`` noise levels (35 evaluations), without churn.
"""

import ml_collections


def with_edm_formulation(
    config: ml_collections.ConfigDict, sigma_data: float, ema_halflife_images: float
) -> ml_collections.ConfigDict:
    """``config`` (changed in place) trained and sampled as EDM; ``sigma_data`` is the data's standard deviation."""
    training, sampling, model = config.training, config.sampling, config.model
    training.sde = "edm"
    training.p_mean = -1.2
    training.p_std = 1.2
    model.parameterization = "edm"
    model.sigma_data = sigma_data
    model.sigma_min = 0.002
    with model.unlocked():  # the reference default it replaces is an int; a noise level is a float
        del model["sigma_max"]
        model.sigma_max = 80.0
    model.ema_halflife_images = ema_halflife_images
    model.ema_rampup_ratio = 0.05
    sampling.method = "edm"
    sampling.nfe = 35  # 18 noise levels, Heun steps, the last one Euler
    sampling.rho = 7.0
    sampling.s_churn = 0.0
    return config
