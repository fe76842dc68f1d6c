"""Forward diffusions of score-based generative modelling (Song et al., ICLR 2021).

``SDE`` is the abstract interface; ``VPSDE``, ``subVPSDE`` and ``VESDE`` are the three SDEs of the
paper with the 2021 reference's names and defaults, ``EDMSDE`` is EDM's ``sigma(t) = t`` (Karras et al.
2022); ``get_sde(config)`` builds one from an
ml-collections config and ``register_sde`` adds new ones.
"""

from .base import SDE, LinearSDE, ReverseSDE, ScoreFn, batch_broadcast, time_batch
from .diffusions import COSINE_DEFAULT_T, EDM_SIGMA_MAX, EDM_SIGMA_MIN, VP_SCHEDULES, EDMSDE, VESDE, VPSDE, subVPSDE
from .gaussian_mixture import GaussianMixture
from .gaussian_process import GaussianProcess, ar1_kernel, squared_exponential_kernel
from .registry import available_sdes, get_sde, register_sde
from .schedules import CosineSchedule, LinearSchedule, NoiseSchedule

__all__ = [
    "SDE",
    "GaussianMixture",
    "GaussianProcess",
    "ar1_kernel",
    "squared_exponential_kernel",
    "LinearSDE",
    "ReverseSDE",
    "ScoreFn",
    "VPSDE",
    "subVPSDE",
    "VESDE",
    "EDMSDE",
    "EDM_SIGMA_MIN",
    "EDM_SIGMA_MAX",
    "VP_SCHEDULES",
    "COSINE_DEFAULT_T",
    "NoiseSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "batch_broadcast",
    "time_batch",
    "get_sde",
    "register_sde",
    "available_sdes",
]
