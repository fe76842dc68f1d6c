"""Defaults of the CIFAR-10 experiments (32x32 RGB images).

Field names and values are those of the 2021 reference (yang-song/score_sde_pytorch); the experiment files
under ``configs/{ve,vp,subvp}`` add the SDE, the network and the sampler on top of them.
"""

import ml_collections

from configs.toolkit_fields import add_toolkit_fields
import torch


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # training: batch, length and the checkpoint / logging cadence (in steps)
    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128
    training.n_iters = 1300001
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq = 50000
    training.snapshot_freq_for_preemption = 10000  # the checkpoints-meta file a pre-empted job resumes from
    training.snapshot_sampling = True  # draw a sample grid at every snapshot
    training.continuous = True
    training.reduce_mean = False
    training.likelihood_weighting = False

    # sampling: the shared predictor-corrector knobs (each experiment names its predictor and corrector)
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.noise_removal = True
    sampling.probability_flow = False

    # evaluation
    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.num_samples = 50000
    evaluate.enable_sampling = False
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"

    # data
    config.data = data = ml_collections.ConfigDict()
    data.dataset = "CIFAR10"
    data.root = ""  # not in the reference (it downloaded through tfds): the local dataset folder
    data.image_size = 32
    data.num_channels = 3
    data.centered = False
    data.random_flip = True
    data.uniform_dequantization = False

    # model: the noise scales of all three SDEs, and what every network shares
    config.model = model = ml_collections.ConfigDict()
    model.num_scales = 1000
    model.sigma_min = 0.01
    model.sigma_max = 50
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.1
    model.embedding_type = "fourier"

    # optimization: Adam with a linear learning-rate warm-up and gradient-norm clipping
    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0
    optim.warmup = 5000
    optim.grad_clip = 1.0

    config.seed = 42
    # the reference fixed torch.device('cuda:0') when CUDA was present; a plain string chosen when the config is
    # built runs anywhere and can be overridden on the command line (--config.device=cpu)
    config.device = "cuda" if torch.cuda.is_available() else "cpu"
    return add_toolkit_fields(config)
