"""Controllable generation with an unconditional score: inpainting, colorization, super-resolution, guidance, latent
interpolation.

[SDE] is Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations" (ICLR 2021),
section 5 and appendices I.1-I.4. One module a method:

* :mod:`.inpainting`: :func:`pc_inpaint` / :func:`get_pc_inpainter` (the reference's API), PC sampling in which
  the known values are replaced, after every predictor and corrector update, by a fresh draw of the forward
  marginal of the data at the time the state then represents ([SDE] appendix I.2, the "replacement" method).
* :mod:`.colorization`: :func:`pc_colorize` / :func:`get_pc_colorizer`, the same procedure in an orthogonally
  decoupled colour space (:func:`colour_decoupling_matrix`) in which the grey level is one channel ([SDE]
  appendix I.3).
* :mod:`.superresolution`: :func:`pc_superresolve` / :func:`get_pc_superresolver` and :func:`smc_superresolve`,
  the image given its block means, by the same two methods.
* :mod:`.operators`: the one abstraction of the three tasks, a linear measurement ``y = A x`` with orthonormal
  rows (``project``, ``lift``, ``complete``): :class:`MaskOperator`, :class:`GreyLevelOperator`,
  :class:`BlockAverage`.
* :mod:`.known_values`: what the three share, :class:`KnownValueReplacement` (the ``update_hook`` of
  :func:`samplers.pc.pc_sample`: there is one PC loop) on any such operator, and the checks of data and masks;
  its docstring has the defects of the reference fixed here and the limitation of the replacement method.
* :mod:`.smc`: :func:`smc_inverse_problem` and its wrappers :func:`smc_inpaint` / :func:`smc_colorize`, SMCDiff
  (Trippe et al., 2023), a particle filter over the reverse-diffusion steps, exact as the number of particles
  grows.
* :mod:`.guidance`: :func:`guided_score_fn`, classifier guidance ``score + scale * grad_x log p_t(y | x)``
  ([SDE] eq. (14) and appendix I.1; :func:`classifier_log_prob_fn` reads a noise-conditional classifier network),
  and :func:`cfg_score_fn`, classifier-free guidance (Ho & Salimans, 2022). Both return plain ``score_fn(x, t)``
  usable with every sampler.
* :mod:`.interpolation`: :func:`interpolate_latents`, :func:`ode_interpolate`: encode with the probability-flow
  ODE, interpolate the latents (spherically, for Gaussian latents), decode ([SDE] section 4.3).
"""

from .colorization import colour_decoupling_matrix, get_pc_colorizer, pc_colorize
from .guidance import cfg_score_fn, classifier_log_prob_fn, classifier_log_prob_grad, guided_score_fn
from .inpainting import get_pc_inpainter, pc_inpaint
from .interpolation import interpolate_latents, ode_interpolate
from .known_values import ChannelTransform, KnownValueReplacement, pc_inverse_problem
from .operators import BlockAverage, GreyLevelOperator, LinearMeasurement, MaskOperator
from .smc import smc_colorize, smc_inpaint, smc_inverse_problem
from .superresolution import get_pc_superresolver, pc_superresolve, smc_superresolve

__all__ = [
    "pc_inpaint",
    "get_pc_inpainter",
    "pc_colorize",
    "get_pc_colorizer",
    "colour_decoupling_matrix",
    "ChannelTransform",
    "KnownValueReplacement",
    "smc_inpaint",
    "smc_colorize",
    "pc_superresolve",
    "get_pc_superresolver",
    "smc_superresolve",
    "LinearMeasurement",
    "MaskOperator",
    "GreyLevelOperator",
    "BlockAverage",
    "pc_inverse_problem",
    "smc_inverse_problem",
    "guided_score_fn",
    "classifier_log_prob_fn",
    "classifier_log_prob_grad",
    "cfg_score_fn",
    "interpolate_latents",
    "ode_interpolate",
]
