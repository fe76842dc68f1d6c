"""Class-conditional generation from configs (``jobs.conditional``, ``main.py --mode train_classifier``): the
2-D mixture ``8gaussians`` with its components as classes, trained end to end in-process.

Statistics: samples are drawn for the classes ``i mod 8`` (``sampling.class_label = -1``), ``N = 1024`` of them;
``class_accuracy`` is the fraction whose nearest mixture mean (the Bayes classifier of the data: misclassification
probability ~1e-7 per point) is the requested class.

* Guided samples (classifier-free guidance with ``w = 0``, classifier guidance with scale 1) target ``p(x | y)``,
  whose accuracy is 1 - 1e-7: the bound 0.97 leaves room for a model trained for 800 steps (measured: 1.000 and
  0.998). An untrained network scores about 1/8.
* ``w = -1`` turns classifier-free guidance into the unconditional score learned through label dropout. Samples
  then do not depend on the requested class, so ``E[class_accuracy] = sum_k (1/8) P(x in class k) = 1/8``
  exactly (the classes cycle evenly); the binomial standard error at N = 1024 is 0.0103 and the bound is 5 SE.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
import torch

from configs import load_config
from jobs import ConfigError, build_experiment, classifier_config, evaluate, sample, sample_class_labels, train, train_classifier
from jobs.images import class_grid_columns
from train_lib import CheckpointError

N_SAMPLES = 1024
OVERRIDES = {
    "training.n_iters": 800, "training.snapshot_freq": 800, "training.snapshot_freq_for_preemption": 800,
    "training.batch_size": 256, "training.snapshot_sampling": False, "model.nf": 64, "model.num_scales": 250,
    "optim.lr": 3e-3, "optim.warmup": 100, "eval.num_samples": N_SAMPLES, "eval.batch_size": N_SAMPLES,
}
CHANCE, ACCURACY_BOUND = 1 / 8, 0.97


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def toy_config(name: str, **extra) -> ml_collections.ConfigDict:
    config = load_config(f"configs/vp/{name}.py")
    for path, value in {**OVERRIDES, **extra}.items():
        section, field = path.split(".")
        config[section][field] = value
    return config


def metrics(config, workdir) -> dict[str, float]:
    return evaluate(config, workdir)[1]["samples"]["metrics"]


@pytest.fixture(scope="module")
def cfg_run(tmp_path_factory):
    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("cfg")
    train(toy_config("toy_mlp_cfg"), workdir)
    return workdir


@pytest.fixture(scope="module")
def guidance_run(tmp_path_factory):
    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("classifier_guidance")
    config = toy_config("toy_mlp_classifier_guidance")
    train(config, workdir)
    report = train_classifier(config, workdir)
    return workdir, report


# ------------------------------------------------------------------ classifier-free guidance
def test_cfg_samples_land_in_the_requested_component(cfg_run):
    results = metrics(toy_config("toy_mlp_cfg"), cfg_run)
    assert results["class_accuracy"] >= ACCURACY_BOUND, results
    report = np.load(cfg_run / "eval" / "ckpt_1" / "samples_0.npz")
    assert np.array_equal(report["labels"], np.arange(N_SAMPLES) % 8)  # the classes travel with the samples


def test_cfg_with_w_minus_one_is_the_unconditional_score(cfg_run):
    """w = -1: the null-label score alone; the accuracy is 1/8 within 5 binomial SE (module docstring)."""
    config = toy_config("toy_mlp_cfg", **{"sampling.guidance_scale": -1.0})
    results = evaluate(config, cfg_run, eval_folder="eval_unconditional")[1]["samples"]["metrics"]
    se = math.sqrt(CHANCE * (1 - CHANCE) / N_SAMPLES)
    assert abs(results["class_accuracy"] - CHANCE) < 5 * se, results
    assert results["sliced_wasserstein"] < 3 * results["sliced_wasserstein_data_to_data"]  # still the whole mixture


def test_one_class_and_same_seed_same_samples(cfg_run):
    config = toy_config("toy_mlp_cfg", **{"sampling.class_label": 5})
    first = sample(config, cfg_run, eval_folder="class5_a")
    second = sample(config, cfg_run, eval_folder="class5_b")
    a = np.load(cfg_run / "class5_a" / f"step_{first['step']}" / "samples_0.npz")
    b = np.load(cfg_run / "class5_b" / f"step_{second['step']}" / "samples_0.npz")
    assert np.array_equal(a["samples"], b["samples"]) and (a["labels"] == 5).all()
    mean = torch.tensor([4 * math.cos(2 * math.pi * 5 / 8), 4 * math.sin(2 * math.pi * 5 / 8)])
    assert float((torch.from_numpy(a["samples"]) - mean).norm(dim=1).max()) < 2.5  # all near component 5 (sd 0.3)


def test_fast_tuning_screens_a_class_conditional_pilot(cfg_run, monkeypatch):
    """``config.sampling.fast_tuning`` on a label-conditional network: the pilot is screened as an unconditional
    one is (sizes from the rule, made small here), and each part of it is guided towards its own samples' classes:
    the score of pilot samples ``index`` equals those rows of the score of all pilot samples."""
    import samplers.from_config
    from samplers import tune_fast_sample

    monkeypatch.setattr(samplers.from_config, "default_pilot_points", lambda shape: 8)
    monkeypatch.setattr(samplers.from_config, "default_most_pilot_points", lambda shape: 32)
    calls = []

    def spied_tuning(sde, score_fn, shape, nfe, **kwargs):
        calls.append((score_fn, shape, kwargs))
        return tune_fast_sample(sde, score_fn, shape, nfe, **kwargs)

    monkeypatch.setattr(samplers.from_config, "tune_fast_sample", spied_tuning)
    config = toy_config("toy_mlp_cfg", **{"sampling.method": "fast", "sampling.nfe": 6, "sampling.fast_tuning": True})
    report = sample(config, cfg_run, eval_folder="tuned")
    assert report["fast_tuning"]["first_points"] == 8 and report["fast_tuning"]["pilot_points"] == 32
    ((score_fn, shape, kwargs),) = calls
    x, t = torch.randn(shape, generator=torch.Generator().manual_seed(0)), torch.full((32,), 0.3)
    rest = torch.tensor([3, 17, 9, 30])
    with torch.no_grad():
        whole, part = score_fn(x, t), kwargs["score_for_points"](rest)(x[rest], t[rest])
        others = kwargs["score_for_points"](rest.roll(1))(x[rest], t[rest])  # guided to other samples' classes
    torch.testing.assert_close(part, whole[rest])
    assert not torch.allclose(others, whole[rest])


# ------------------------------------------------------------------ classifier guidance
def test_classifier_guidance_samples_land_in_the_requested_component(guidance_run):
    workdir, report = guidance_run
    accuracy = report["accuracy_by_time"]
    # the classifier of x(t): certain near t = 0, chance at t = T where x(T) has forgotten x(0)
    assert accuracy["1e-05"] > 0.99 and abs(accuracy["1"] - report["chance"]) < 0.05, accuracy
    assert (workdir / "classifier" / "accuracy.json").is_file()
    results = metrics(toy_config("toy_mlp_classifier_guidance"), workdir)
    assert results["class_accuracy"] >= ACCURACY_BOUND, results


def test_without_guidance_the_same_network_ignores_the_class(guidance_run):
    """classifier_scale = 0: the unconditional score, accuracy 1/8 within 5 SE, the classifier still loaded."""
    workdir, _ = guidance_run
    config = toy_config("toy_mlp_classifier_guidance", **{"sampling.classifier_scale": 0.0})
    results = evaluate(config, workdir, eval_folder="eval_scale0")[1]["samples"]["metrics"]
    assert abs(results["class_accuracy"] - CHANCE) < 5 * math.sqrt(CHANCE * (1 - CHANCE) / N_SAMPLES), results


# ------------------------------------------------------------------ configuration
def test_classifier_config_keeps_the_sde_and_overrides_the_run():
    config = toy_config("toy_mlp_classifier_guidance")
    derived = classifier_config(config)
    assert derived.model.name == "mlp_classifier" and derived.model.num_layers == 2
    assert (derived.model.beta_min, derived.model.beta_max) == (config.model.beta_min, config.model.beta_max)
    assert derived.training.n_iters == 2000 and derived.training.sde == config.training.sde
    assert derived.training.snapshot_sampling is False and derived.optim.lr == 1e-3
    assert config.model.name == "mlp"  # the score model's config is not modified


def test_class_labels_cycle_or_repeat():
    config = toy_config("toy_mlp_cfg")
    assert sample_class_labels(config, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    config.sampling.class_label = 3
    assert sample_class_labels(config, 4).tolist() == [3, 3, 3, 3]
    assert class_grid_columns(torch.arange(20) % 8) == 8 and class_grid_columns(torch.full((4,), 3)) is None


@pytest.mark.parametrize(
    "name, fields, message",
    [
        ("toy_mlp_continuous", {"training.label_dropout": 0.1}, r"label_dropout=0.1 trains a label-conditional network"),
        ("toy_mlp_cfg", {"training.label_dropout": None}, r"needs config.training.label_dropout"),
        ("toy_mlp_cfg", {"training.label_dropout": 1.5}, r"config.training.label_dropout must be a finite number >= 0 and < 1"),
        ("toy_mlp_cfg", {"sampling.class_label": 8}, r"class_label must be -1 .* \[0, 8\)"),
        ("toy_mlp_cfg", {"data.num_classes": 1}, r"num_classes must be"),
        ("toy_mlp_cfg", {"data.dataset": "swissroll"}, r"no class labels.*digits"),
        ("toy_mlp_cfg", {"sampling.classifier": "classifier"}, r"both given; use one"),
        ("toy_mlp_classifier_guidance", {"sampling.classifier_scale": float("nan")}, r"classifier_scale must be a finite"),
        ("toy_mlp_continuous", {"sampling.guidance_scale": 3.0}, r"guidance_scale=3.0 asks for class-conditional"),
        ("toy_mlp_continuous", {"sampling.class_label": 5}, r"class_label=5 asks for .* network is unconditional"),
        ("toy_mlp_classifier_guidance", {"sampling.guidance_scale": 2.0}, r"guidance_scale is the w of classifier-free"),
        ("toy_mlp_cfg", {"sampling.classifier_scale": 3.0}, r"classifier_scale scales classifier guidance, but the"),
        ("toy_mlp_cfg", {"data.num_classes": 12}, r"num_classes=12, but the labels of 8gaussians are 0..7; set it to 8"),
        ("toy_mlp_cfg", {"data.num_classes": 5}, r"num_classes=5, but the labels of 8gaussians are 0..7"),
    ],
)
def test_bad_conditioning_fails_before_any_work(name, fields, message, tmp_path):
    config = toy_config(name)
    with config.unlocked():
        for path, value in fields.items():
            section, field = path.split(".")
            config[section][field] = value
    train_fields = ("label_dropout", "num_classes", "swissroll")
    mode = "train" if any(name in str(fields) for name in train_fields) else "sample"
    with pytest.raises(ConfigError, match=message):
        build_experiment(config, tmp_path, mode)
    assert not (tmp_path / "checkpoints").exists()


def test_a_missing_classifier_is_a_checkpoint_error(tmp_path):
    """Classifier guidance before ``--mode train_classifier``: a job error (exit status 1), as a missing checkpoint of
    the score model, named before any sampling."""
    with pytest.raises(CheckpointError, match=r"no classifier checkpoint .*--mode train_classifier"):
        build_experiment(toy_config("toy_mlp_classifier_guidance"), tmp_path, "sample")


def test_train_classifier_needs_a_classifier_section(tmp_path):
    config = toy_config("toy_mlp_cfg", **{"sampling.classifier": "classifier"})
    with pytest.raises(ConfigError, match="config.classifier.model"):
        train_classifier(config, tmp_path)
    config = toy_config("toy_mlp_continuous")
    with pytest.raises(ConfigError, match="config.sampling.classifier must name"):
        train_classifier(config, tmp_path)


# ------------------------------------------------------------------ the pieces
def test_step_functions_compute_the_losses_they_name():
    """The CFG and classifier steps evaluate exactly get_cfg_loss_fn / get_classifier_loss_fn on (x, y) with the same
    generator (one implementation of a step, make_step_fn, for every objective); the unlabelled batch is refused."""
    import sde_lib
    from models import ExponentialMovingAverage, MLPClassifier
    from models.conditional_mlp import ConditionalMLPScoreNet
    from train_lib import get_cfg_loss_fn, get_classifier_loss_fn, get_classifier_step_fn, get_step_fn

    sde = sde_lib.VPSDE()
    x, y = torch.randn(64, 2), torch.randint(0, 8, (64,))
    for network, step, loss in (
        (ConditionalMLPScoreNet(2, 8, hidden_dim=32), get_step_fn(sde, False, label_dropout=0.3, reduce_mean=True),
         get_cfg_loss_fn(sde, 0.3, train=False, reduce_mean=True)),
        (MLPClassifier(2, 8, hidden_dim=32), get_classifier_step_fn(sde, False), get_classifier_loss_fn(sde, train=False)),
    ):
        state = {"model": network, "ema": ExponentialMovingAverage(network.parameters(), 0.0), "step": 0}
        got = step(state, (x, y), torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = loss(network, x, y, torch.Generator().manual_seed(5))
        assert float(got) == float(expected)
        with pytest.raises(ValueError, match=r"pair \(x, y\)"):
            step(state, x, torch.Generator().manual_seed(5))


def test_sampling_fn_follows_the_score_factory():
    """get_sampling_fn(..., score_fn_factory) samples with the factory's score: with the exact score of the mixture it
    gives exactly what the sampler gives when called directly with that score (same generator)."""
    import sde_lib
    from samplers import get_sampling_fn, pc_sample

    config = toy_config("toy_mlp_continuous")
    sde = sde_lib.get_sde(config)
    exact = data_lib_mixture().score_fn(sde)
    fn = get_sampling_fn(config, sde, (256, 2), None, 1e-3, score_fn_factory=lambda score_model: exact)
    got, nfe = fn(torch.nn.Identity(), generator=torch.Generator().manual_seed(0))
    expected, expected_nfe = pc_sample(sde, exact, (256, 2), predictor="reverse_diffusion", corrector="none",
                                       snr=config.sampling.snr, n_steps=1, probability_flow=False, denoise=True,
                                       eps=1e-3, generator=torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(got, expected) and nfe == expected_nfe


def data_lib_mixture():
    import data_lib

    return data_lib.toy_gaussian_mixture("8gaussians")


def test_class_agreement_and_toy_classes():
    import data_lib
    from sample_quality import class_agreement

    result = class_agreement(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 3]))
    assert result["class_accuracy"] == 0.75 and math.isclose(result["class_accuracy_stderr"], math.sqrt(0.75 * 0.25 / 4))
    board = data_lib.toy_classify("checkerboard", torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [-3.0, -1.0], [5.0, 0.0], [1.0, -3.0], [1.0, -1.0]]))
    assert board.tolist() == [0, -1, -1, -1, 4, -1]  # dark squares (i + j even), numbered in the order of their corners
    assert data_lib.toy_classify("moons", torch.zeros(3, 2)) is None


def test_saved_samples_keep_their_classes(tmp_path):
    from jobs import save_samples

    paths = save_samples(torch.randn(16, 2), tmp_path / "points", title="t", labels=torch.arange(16) % 4)
    assert np.array_equal(np.load(paths["npz"])["labels"], np.arange(16) % 4) and paths["png"].is_file()
    paths = save_samples(torch.rand(20, 1, 8, 8), tmp_path / "images", labels=torch.arange(20) % 10)
    assert np.array_equal(np.load(paths["npz"])["labels"], np.arange(20) % 10)


# ------------------------------------------------------------------ the digits configs, tiny runs
DIGITS_TINY = {
    "training.n_iters": 2, "training.batch_size": 10, "training.log_freq": 1, "training.eval_freq": 1,
    "training.snapshot_freq": 2, "training.snapshot_freq_for_preemption": 1, "eval.batch_size": 10, "eval.num_samples": 10,
}


def digits_config(name: str, **extra) -> ml_collections.ConfigDict:
    config = load_config(f"configs/vp/{name}.py")
    with config.unlocked():
        for path, value in {**DIGITS_TINY, **extra}.items():
            *sections, field = path.split(".")
            node = config
            for section in sections:
                node = node[section]
            node[field] = value
    return config


def test_digits_cfg_config_trains_a_class_conditional_unet_and_samples_each_digit(tmp_path):
    from models import NCSNpp

    config = digits_config("digits_ddpmpp_cfg")
    exp = train(config, tmp_path)
    assert isinstance(exp.model, NCSNpp) and exp.model.null_label == 10 and exp.labelled
    snapshot = np.load(tmp_path / "samples" / "iter_2" / "sample.npz")
    assert np.array_equal(snapshot["labels"], np.arange(10))
    report = sample(config, tmp_path)
    saved = np.load(tmp_path / "samples" / "step_2" / "samples_0.npz")
    assert report["nfe_per_round"] == [config.sampling.nfe] and np.array_equal(saved["labels"], np.arange(10))
    assert report["conditioning"] == "classifier-free guidance, guidance scale w 1"


def test_digits_classifier_guidance_config_trains_a_conv_classifier_and_guides(tmp_path):
    from models import ConvClassifier

    config = digits_config("digits_ddpmpp_classifier_guidance", **{
        "classifier.training.n_iters": 2, "classifier.training.snapshot_freq": 2, "classifier.training.batch_size": 10,
    })
    train(config, tmp_path)
    report = train_classifier(config, tmp_path)
    assert report["step"] == 2 and report["test_examples"] == 297 and set(report["accuracy_by_time"]) == {"1e-05", "0.1", "0.25", "0.5", "0.75", "1"}
    exp = build_experiment(config, tmp_path, "sample")
    assert exp.conditioning.kind == "classifier" and exp.conditioning.scale == 2.0
    assert isinstance(classifier_config(config).model.name, str)
    built = build_experiment(classifier_config(config), tmp_path / "classifier", "eval", task="classifier")
    assert isinstance(built.model, ConvClassifier) and built.sampling_fn is None
    result = sample(config, tmp_path)
    assert np.array_equal(np.load(tmp_path / "samples" / "step_2" / "samples_0.npz")["labels"], np.arange(10))
    assert result["conditioning"] == "classifier guidance, classifier scale 2"
