"""Defaults shared by the 2-D toy experiments (points from a synthetic density, the MLP score network).

The sections and field names are those of the 2021 reference's configs (``training``, ``sampling``, ``eval``,
``data``, ``model``, ``optim``), sized for 2-D points on a CPU.
"""

import ml_collections

from configs.toolkit_fields import add_toolkit_fields


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # training
    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 512
    training.n_iters = 20000
    training.snapshot_freq = 5000
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq_for_preemption = 1000
    training.snapshot_sampling = True
    training.likelihood_weighting = False
    training.continuous = True
    training.reduce_mean = True

    # sampling: no corrector; with the exact score of the 8-Gaussian ring the reference's Langevin corrector moves the
    # within-mode variance error of reverse diffusion by less than its standard error, at twice the evaluations
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "none"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16

    # evaluation
    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 4
    evaluate.batch_size = 1024
    evaluate.enable_sampling = True
    evaluate.num_samples = 4096
    evaluate.enable_loss = True
    evaluate.enable_bpd = True
    evaluate.bpd_dataset = "test"

    # data: 2-D points drawn from a synthetic density with a seed
    config.data = data = ml_collections.ConfigDict()
    data.dataset = "8gaussians"
    data.dim = 2
    data.centered = True

    # model: the time-conditioned MLP
    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"
    model.nf = 128
    model.num_layers = 3
    model.embedding_type = "positional"
    model.fourier_scale = 16.0  # std of the random Fourier frequencies (embedding_type "fourier")
    model.scale_by_sigma = False  # divide the output by sigma ("fourier" only)
    model.dropout = 0.0
    model.ema_rate = 0.999
    model.sigma_min = 0.01
    model.sigma_max = 10.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0

    # optimization
    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0
    optim.optimizer = "Adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 500
    optim.grad_clip = 1.0

    config.seed = 42
    config.device = "cpu"
    return add_toolkit_fields(config)
