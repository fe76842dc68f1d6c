"""The config fields the toolkit reads beyond the 2021 reference's, declared once with their types and defaults.

Every default config (``default_*_configs.py``) ends with :func:`add_toolkit_fields`, so every shipped config
declares every field a job or library function reads, and every documented override works on every config
(``--config.eval.ckpt=2``, ``--config.sampling.nfe=10``, ...). A field a config already sets keeps its value.

``None`` defaults are typed placeholders (``ml_collections.config_dict.placeholder``): "unset, use the rule the
docstring names", and an override is parsed as the declared type. The value checks live in
:mod:`jobs.config_checks`.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

#: section -> field -> (default, type, meaning); a default of None is a placeholder of that type
TOOLKIT_FIELDS: dict[str, dict[str, tuple[Any, type, str]]] = {
    "training": {
        "eps": (1e-5, float, "smallest time of the continuous-time loss"),
        "importance_weighting": (False, bool, "likelihood weighting by importance-sampled time"),
        "mixed_precision": ("auto", str, "autocast of the training step: 'no', 'bf16', 'fp16' (CUDA) or 'auto' (bf16 "
                            "where the device has bf16 matrix units: CUDA, AMX)"),
        "label_dropout": (None, float, "classifier-free guidance: probability of the null label; unset: unconditional"),
        "p_mean": (-1.2, float, "the 'edm' parameterization's loss: mean of ln(sigma)"),
        "p_std": (1.2, float, "the 'edm' parameterization's loss: standard deviation of ln(sigma)"),
    },
    "sampling": {
        "mixed_precision": ("auto", str, "autocast of the network when sampling: 'no', 'bf16', 'fp16' (CUDA) or 'auto' "
                            "(bf16 where the device has bf16 matrix units: CUDA, AMX)"),
        "predictor": ("reverse_diffusion", str, "method 'pc' and --mode inpaint / colorize: the predictor"),
        "corrector": ("langevin", str, "method 'pc' and --mode inpaint / colorize: the corrector"),
        "eps": (None, float, "smallest time reached by the samplers; unset: 1e-3 for VP / sub-VP, 1e-5 for VE"),
        "clip_denoised": (False, bool, "every sampler follows the score whose denoised estimate is clipped to the "
                          "data's range (images, waveforms; not the toy densities): samplers.clip_denoised"),
        "measurement_consistency": (False, bool, "a network conditioned on a linear measurement (SR3's "
                                    "'low_resolution'): its denoised estimate is projected onto the images with the "
                                    "measured block means (samplers.consistent_denoised)"),
        "ode_method": ("RK45", str, "method 'ode': the solver"),
        "rtol": (None, float, "methods 'ode' / 'adaptive': relative tolerance; unset: 1e-5 ('ode'), 1e-2 ('adaptive')"),
        "atol": (None, float, "method 'ode': absolute tolerance; unset: 1e-5"),
        "sde_method": ("euler", str, "method 'sde': the torchsde scheme"),
        "dt": (1e-3, float, "method 'sde': the step size"),
        "nfe": (20, int, "methods 'fast' and 'edm': score evaluations ('edm': 2N - 1 of N steps, N = (nfe + 1) // 2)"),
        "rho": (7.0, float, "method 'edm': the exponent of the noise levels (Karras et al. 2022, eq. (5))"),
        "s_churn": (0.0, float, "method 'edm': the stochastic churn S_churn (0: deterministic)"),
        "s_min": (0.0, float, "method 'edm': churn only at noise levels >= s_min"),
        "s_max": (None, float, "method 'edm': churn only at noise levels <= s_max; unset: no bound"),
        "s_noise": (1.0, float, "method 'edm': the noise inflation S_noise of the churn"),
        "order": (None, int, "method 'fast': solver order; unset: the sampler's default"),
        "schedule": (None, str, "method 'fast': time steps; unset: the sampler's default"),
        "fast_tuning": (False, bool, "method 'fast': --mode sample / eval choose fast_sample's options for each "
                        "checkpoint at this nfe by their error against a converged solve on pilot samples "
                        "(samplers.tune_fast_sample), cached in workdir/fast_tuning/; order and schedule must be unset"),
        "fast_tuning_points": (None, int, "fast_tuning: pilot samples, solved at once (~4000-8000 batched "
                               "evaluations); unset: every option on max(64, ceil(4096 / data dimension)), the "
                               "finalists on at least 1024"),
        "fast_tuning_evidence": (0.0, float, "fast_tuning: keep the fixed default unless a candidate leads by this "
                                 "many standard errors on the whole pilot (0: take the pilot's best)"),
        "inpainting": ("replacement", str, "--mode inpaint / colorize: 'replacement' or 'smc'"),
        "smc_particles": (16, int, "inpainting 'smc': particles per image"),
        "superresolution_factor": (None, int, "--mode superresolve: side of the averaged pixel blocks; unset: "
                                   "model.low_resolution_factor for a 'low_resolution'-conditioned model, else 2"),
        "classifier": (None, str, "classifier guidance: the classifier's run folder; unset: no classifier"),
        "classifier_scale": (1.0, float, "classifier guidance: the scale"),
        "guidance_scale": (0.0, float, "classifier-free guidance: w"),
        "class_label": (-1, int, "class of every sample; -1: the classes in turn"),
    },
    "eval": {
        "ckpt": (None, int, "--mode sample: the numbered checkpoint; unset: the latest"),
        "after_training": (False, bool, "--mode train: evaluate the last checkpoint when training ends"),
        "bpd_num_repeats": (1, int, "dequantizations averaged per test example"),
        "hutchinson_type": ("Rademacher", str, "divergence of the likelihood: 'Rademacher', 'Gaussian' or 'exact'"),
        "likelihood_method": ("RK45", str, "ODE solver of the likelihood: adaptive (scipy's 'RK45', ..., torch's "
                              "'dopri5', 'bosh3') or on a fixed log-SNR grid ('rk4', likelihood_steps steps)"),
        "likelihood_steps": (None, int, "likelihood_method 'rk4': steps on the grid; unset: chosen from "
                             "likelihood_accuracy"),
        "likelihood_rtol": (1e-5, float, "its relative tolerance"),
        "likelihood_atol": (1e-5, float, "its absolute tolerance"),
        "likelihood_eps": (1e-5, float, "its smallest time"),
        "likelihood_product": ("vjp", str, "Hutchinson product v^T J v: 'vjp' (reverse mode) or 'jvp' (forward mode)"),
        "likelihood_accuracy": (None, float, "solver error asked for, in the likelihood's unit (bits/dim or nats per "
                                "example): the tolerance (for 'rk4', the steps) is chosen from it; unset: "
                                "likelihood_rtol / likelihood_atol (likelihood_steps)"),
        "likelihood_error_samples": (4, int, "test examples also solved at a 10x tighter tolerance (for 'rk4', twice "
                                     "the steps) to estimate the solver's error (0: no estimate)"),
        "likelihood_mixed_precision": ("no", str, "autocast of the network in the likelihood: 'no' (full "
                                       "precision), 'bf16', 'fp16' (CUDA) or 'auto'"),
        "stats_path": (None, str, "Inception statistics (.npz) of the data for FID / KID; unset: no Inception metrics"),
        "inception_weights": (None, str, "local Inception weights for those metrics"),
    },
    "model": {
        "noise_schedule": ("linear", str, "VP / sub-VP: 'linear' or 'cosine'"),
        "exact_marginal": (False, bool, "VE: variance sigma(t)^2 - sigma_min^2 instead of the reference's sigma(t)^2"),
        "ema_halflife_images": (None, float, "EMA by EDM's half-life in images (with ramp-up) instead of ema_rate; "
                                "unset: ema_rate"),
        "ema_rampup_ratio": (0.05, float, "with ema_halflife_images: the half-life is at most this share of the "
                             "images seen"),
        "sigma_data": (0.5, float, "the 'edm' parameterization: the data's standard deviation"),
        "parameterization": (None, str, "how the network's labels and output read as a score (models.ScoreModel); "
                             "None: the reference's reading of training.continuous"),
        "compile": ("none", str, "torch.compile of the network's forward (models.compiled): 'none', or the mode "
                    "'default', 'reduce-overhead' or 'max-autotune'"),
        "conditioning": (None, str, "signal conditioning of the network (models.conditioning): 'low_resolution' (SR3) "
                         "or another registered condition map; unset: unconditional"),
        "low_resolution_factor": (2, int, "conditioning 'low_resolution': the side of the averaged pixel blocks"),
    },
    "data": {
        "skip_bad_images": (False, bool, "image folders: skip unreadable images, logging their count, instead of stopping"),
        "sample_rate": (8000, int, "waveforms (tones, wav_folder): samples per second"),
        "audio_length": (2048, int, "waveforms: samples per example"),
        "center_crop": (None, int, "faces: a centred crop of this side (<= 25; image_size must equal it); unset: none"),
    },
    "optim": {
        "beta2": (0.999, float, "Adam's second-moment decay"),
    },
    "": {
        "num_threads": (0, int, "CPU threads of torch; 0: chosen automatically"),
    },
}


def add_toolkit_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Declare every field of :data:`TOOLKIT_FIELDS` that ``config`` lacks (in place); return ``config``."""
    for section, fields in TOOLKIT_FIELDS.items():
        node = config
        if section:
            if section not in config:
                config[section] = ml_collections.ConfigDict()
            node = config[section]
        for name, (default, kind, _) in fields.items():
            if name not in node:
                node[name] = placeholder(kind) if default is None else default
    return config


def declared_fields() -> set[str]:
    """The dotted names of :data:`TOOLKIT_FIELDS`."""
    return {f"{section}.{name}" if section else name for section, fields in TOOLKIT_FIELDS.items() for name in fields}
