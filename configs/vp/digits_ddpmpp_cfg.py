"""Classifier-free guidance on scikit-learn's 8x8 digits: the main job's DDPM++ made class-conditional, VP SDE.

The network of ``configs/vp/digits_ddpmpp_continuous.py`` with a learned embedding of the digit (and of a null
"no digit" label) added to its time embedding (``model.class_conditional``), trained with label dropout 0.1 (Ho &
Salimans, 2022) so that it learns the conditional and the unconditional scores. Samples follow
``(1 + w) s(x, t, y) - w s(x, t)`` with ``w = sampling.guidance_scale``, for the digits 0..9 in turn
(``sampling.class_label = -1``: the grid of 100 evaluation samples shows one digit per column). ``--mode eval``
reports how often the toolkit's digits classifier recognises the requested digit (``class_accuracy``).
"""

import ml_collections

from configs.vp.digits_ddpmpp_continuous import get_config as get_digits_config


def get_config() -> ml_collections.ConfigDict:
    config = get_digits_config()
    config.data.num_classes = 10  # the digits 0..9
    config.model.class_conditional = True  # class embedding (10 digits + the null label) added to the time embedding
    config.training.label_dropout = 0.1  # probability of the null label: the unconditional score's share
    config.sampling.guidance_scale = 1.0  # w: 0 samples p(x | y); w > 0 sharpens the classes
    config.sampling.class_label = -1  # -1: sample i is drawn for digit i mod 10
    config.eval.batch_size = 100  # one round of 100 samples: a 10 x 10 grid, one digit per column
    config.eval.num_samples = 100
    config.eval.enable_bpd = False
    return config
