"""Classifier guidance on the 2-D mixture ``8gaussians`` (its 8 components are the classes), VP SDE.

The unconditional MLP score network (``python main.py --mode train``) and a noise-conditional classifier of the
perturbed points ``p_t(y | x(t))`` (``--mode train_classifier``, into ``workdir/classifier``) are trained
separately on the same SDE; samples follow ``score + classifier_scale * grad_x log p_t(y | x)`` ([SDE] eq. (14))
for the classes ``0, 1, ..., 7`` in turn (``sampling.class_label = -1``). ``--mode eval`` reports how many land in
their class (``class_accuracy``).
"""

import ml_collections

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.n_iters = 2000
    config.training.snapshot_freq = 2000
    config.data.dataset = "8gaussians"
    config.data.num_classes = 8  # the mixture components

    # the noise-conditional classifier: fields replacing those of config.model / training / optim in its run
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.model = ml_collections.ConfigDict(
        {"name": "mlp_classifier", "nf": 128, "num_layers": 2, "ema_rate": 0.99}
    )
    classifier.training = ml_collections.ConfigDict({"n_iters": 2000, "snapshot_freq": 2000, "batch_size": 512})
    classifier.optim = ml_collections.ConfigDict({"lr": 1e-3, "warmup": 100})

    config.sampling.classifier = "classifier"  # the classifier's run folder, inside the workdir
    config.sampling.classifier_scale = 1.0  # 1: Bayes' rule, samples of p(x | y)
    config.sampling.class_label = -1  # -1: sample i is drawn for class i mod 8
    config.eval.begin_ckpt = 1
    config.eval.end_ckpt = 1
    config.eval.enable_bpd = False
    return config
