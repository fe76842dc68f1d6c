"""Classifier-free guidance on the 2-D mixture ``8gaussians`` (its 8 components are the classes), VP SDE.

The label-conditional MLP (``conditional_mlp``: the MLP score network plus a learned class embedding with a null
class) is trained with label dropout 0.1 (Ho & Salimans, 2022), so one network learns the conditional scores and
the unconditional one. Samples follow ``(1 + w) s(x, t, y) - w s(x, t)`` with ``w = sampling.guidance_scale``
(0: the conditional score), for the classes ``0, 1, ..., 7`` in turn (``sampling.class_label = -1``; a number
asks for one class). ``--mode eval`` reports how many samples land in their class (``class_accuracy``).
"""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.n_iters = 2000
    config.training.snapshot_freq = 2000
    config.training.label_dropout = 0.1  # probability of the null label: the unconditional score's share
    config.data.dataset = "8gaussians"
    config.data.num_classes = 8  # the mixture components
    config.model.name = "conditional_mlp"
    config.sampling.guidance_scale = 0.0  # w: 0 samples p(x | y); w > 0 sharpens the classes
    config.sampling.class_label = -1  # -1: sample i is drawn for class i mod 8
    config.eval.begin_ckpt = 1
    config.eval.end_ckpt = 1
    config.eval.enable_bpd = False
    return config
