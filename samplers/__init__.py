"""Samplers and likelihoods for score-based SDE models.

Every sampler is a plain function ``sampler(sde, score_fn, shape, ..., generator=None, device=None,
progress=False) -> (x, nfe)``, where ``score_fn(x, t)`` takes ``x`` of shape ``(B, ...)`` and ``t`` of shape
``(B,)`` and ``nfe`` is the number of batched score evaluations made:

* :func:`pc_sample`: predictor-corrector sampling with registered predictors and correctors ([SDE] Alg. 1).
* :func:`ode_sample` / :func:`ode_encode`: the probability-flow ODE ([SDE] eq. 13) with adaptive solvers.
* :func:`sde_sample`: the reverse-time SDE ([SDE] eq. 6) integrated by torchsde.
* :func:`adaptive_sde_sample`: adaptive-step reverse-SDE solver (Jolicoeur-Martineau et al., 2021).
* :func:`fast_sample`: few-step exponential integrators / Heun for the probability-flow ODE;
  :func:`tune_fast_sample` chooses its options for one model by measuring them against a converged solve.
* :func:`edm_sample`: EDM's Heun sampler with stochastic churn (Karras et al. 2022, Algorithm 2), any linear SDE.

:func:`clip_denoised` and :func:`consistent_denoised` project a score's denoised estimate onto the data's range or a
known measurement (for sampling, not likelihoods).
:func:`log_likelihood` and :func:`bits_per_dim` give exact likelihoods through the same ODE.
:func:`pc_inpaint` / :func:`pc_colorize` (and the reference-style :func:`get_pc_inpainter` /
:func:`get_pc_colorizer`), :func:`guided_score_fn` (classifier guidance), :func:`cfg_score_fn`
(classifier-free guidance) and :func:`interpolate_latents` / :func:`ode_interpolate` give controllable generation;
:func:`smc_inpaint` / :func:`smc_colorize` (SMCDiff) are inpainting and colorization that are exact in the limit of
many particles; :func:`pc_superresolve` / :func:`smc_superresolve` the same two methods for super-resolution (all
three tasks are one linear measurement, :class:`samplers.controllable.LinearMeasurement`).
"""

from .adaptive import adaptive_sde_sample
from .denoised_projection import clip_denoised, consistent_denoised, project_denoised
from .common import CountingScoreFn
from .controllable import (
    KnownValueReplacement,
    cfg_score_fn,
    classifier_log_prob_fn,
    colour_decoupling_matrix,
    get_pc_colorizer,
    get_pc_inpainter,
    guided_score_fn,
    interpolate_latents,
    ode_interpolate,
    pc_colorize,
    pc_inpaint,
    pc_superresolve,
    smc_colorize,
    smc_inpaint,
    smc_superresolve,
)
from .edm import edm_sample
from .fast import fast_sample
from .fast_tuning import FastSolverChoice, FastSolverOptions, tune_fast_sample
from .from_config import get_likelihood_fn, get_sampling_fn, sampling_score_transform
from .likelihood import (
    LIKELIHOOD_METHODS, BitsPerDim, SolverError, bits_per_dim, choose_tolerance, dequantized_bits_per_dim, grid_offsets,
    hutchinson_probe, likelihood_grid, log_likelihood, solver_error,
)
from .ode import denoise_step, ode_encode, ode_sample, probability_flow_drift
from .odeint import GRID_METHODS, ODE_METHODS, SCIPY_METHODS, TORCH_METHODS, ODESolution, odeint, odeint_grid
from .pc import (
    Corrector,
    Predictor,
    available_correctors,
    available_predictors,
    get_corrector,
    get_predictor,
    pc_sample,
    register_corrector,
    register_predictor,
)
from .sde_solvers import sde_sample

__all__ = [
    "pc_inpaint",
    "smc_inpaint",
    "smc_colorize",
    "pc_superresolve",
    "smc_superresolve",
    "pc_colorize",
    "get_pc_inpainter",
    "get_pc_colorizer",
    "KnownValueReplacement",
    "colour_decoupling_matrix",
    "guided_score_fn",
    "classifier_log_prob_fn",
    "cfg_score_fn",
    "interpolate_latents",
    "ode_interpolate",
    "pc_sample",
    "ode_sample",
    "ode_encode",
    "sde_sample",
    "adaptive_sde_sample",
    "fast_sample",
    "tune_fast_sample",
    "FastSolverChoice",
    "FastSolverOptions",
    "edm_sample",
    "get_sampling_fn",
    "sampling_score_transform",
    "clip_denoised",
    "consistent_denoised",
    "project_denoised",
    "get_likelihood_fn",
    "log_likelihood",
    "solver_error",
    "choose_tolerance",
    "SolverError",
    "bits_per_dim",
    "dequantized_bits_per_dim",
    "hutchinson_probe",
    "likelihood_grid",
    "grid_offsets",
    "LIKELIHOOD_METHODS",
    "BitsPerDim",
    "Predictor",
    "Corrector",
    "register_predictor",
    "register_corrector",
    "get_predictor",
    "get_corrector",
    "available_predictors",
    "available_correctors",
    "odeint",
    "odeint_grid",
    "ODESolution",
    "ODE_METHODS",
    "GRID_METHODS",
    "TORCH_METHODS",
    "SCIPY_METHODS",
    "probability_flow_drift",
    "denoise_step",
    "CountingScoreFn",
]
