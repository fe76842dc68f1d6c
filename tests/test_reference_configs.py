"""The 2021 reference's experiment configs (``configs/{ve,vp,subvp}/...``): same names, fields and values.

Checked here: every reference experiment exists under its familiar path and loads; the SDE it names builds
with the reference's numbers (written out below, read from yang-song/score_sde_pytorch at commit cb1f359); each
section has the fields training, sampling, evaluation and the networks read; the networks build (on the
``meta`` device, so no memory is spent) with the reference's parameter counts and tensor shapes; command-line
overrides work the ml-collections way. When the reference repository is present, every value of every config is
compared with the reference's own ``get_config()``, up to the deliberate differences listed in ``DELIBERATE``.
"""

from __future__ import annotations

import collections
import copy
import importlib
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import ml_collections
import pytest
import torch
from absl import flags
from ml_collections import config_flags

import configs
from configs.toolkit_fields import declared_fields
import models
import samplers
import sde_lib
from reference_fixtures import FULL_SIZE_KEYS

# ml_collections' config_flags still loads config files with the deprecated importlib load_module()
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# every experiment of the reference (configs/<name>.py), which users look for by these names
REFERENCE_EXPERIMENTS = [
    "subvp/cifar10_ddpm_continuous",
    "subvp/cifar10_ddpmpp_continuous",
    "subvp/cifar10_ddpmpp_deep_continuous",
    "subvp/cifar10_ncsnpp_continuous",
    "subvp/cifar10_ncsnpp_deep_continuous",
    "ve/bedroom_ncsnpp_continuous",
    "ve/celeba_ncsnpp",
    "ve/celebahq_256_ncsnpp_continuous",
    "ve/celebahq_ncsnpp_continuous",
    "ve/church_ncsnpp_continuous",
    "ve/cifar10_ddpm",
    "ve/cifar10_ncsnpp",
    "ve/cifar10_ncsnpp_continuous",
    "ve/cifar10_ncsnpp_deep_continuous",
    "ve/ffhq_256_ncsnpp_continuous",
    "ve/ffhq_ncsnpp_continuous",
    "ve/ncsn/celeba",
    "ve/ncsn/celeba_124",
    "ve/ncsn/celeba_1245",
    "ve/ncsn/celeba_5",
    "ve/ncsn/cifar10",
    "ve/ncsn/cifar10_124",
    "ve/ncsn/cifar10_1245",
    "ve/ncsn/cifar10_5",
    "ve/ncsnv2/bedroom",
    "ve/ncsnv2/celeba",
    "ve/ncsnv2/cifar10",
    "vp/cifar10_ddpmpp",
    "vp/cifar10_ddpmpp_continuous",
    "vp/cifar10_ddpmpp_deep_continuous",
    "vp/cifar10_ncsnpp",
    "vp/cifar10_ncsnpp_continuous",
    "vp/cifar10_ncsnpp_deep_continuous",
    "vp/ddpm/bedroom",
    "vp/ddpm/celebahq",
    "vp/ddpm/church",
    "vp/ddpm/cifar10",
    "vp/ddpm/cifar10_continuous",
    "vp/ddpm/cifar10_unconditional",
]
DEFAULTS = ["cifar10", "celeba", "lsun"]
REFERENCE_MODEL_NAMES = {"ncsnpp", "ddpm", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256", "ncsn"}
SDE_CLASSES = {"vpsde": sde_lib.VPSDE, "subvpsde": sde_lib.subVPSDE, "vesde": sde_lib.VESDE}


def path_of(name: str) -> Path:
    return CONFIG_DIR / f"{name}.py"


def load(name: str) -> ml_collections.ConfigDict:
    return configs.load_config(path_of(name))


experiments = pytest.mark.parametrize("name", REFERENCE_EXPERIMENTS)


def test_every_reference_experiment_is_here_by_its_name():
    missing = [name for name in REFERENCE_EXPERIMENTS if not path_of(name).is_file()]
    assert not missing, f"reference experiments missing from configs/: {missing}"
    for dataset in DEFAULTS:
        assert (CONFIG_DIR / f"default_{dataset}_configs.py").is_file()


# ============================================================================ SDE and sampler, with reference numbers

# (SDE class, N, (sigma_min, sigma_max) or (beta_min, beta_max), training.continuous), as the reference sets them
REFERENCE_SDE = {
    "ve/cifar10_ncsnpp_continuous": (sde_lib.VESDE, 1000, (0.01, 50.0), True),
    "ve/cifar10_ncsnpp": (sde_lib.VESDE, 1000, (0.01, 50.0), False),
    "ve/celeba_ncsnpp": (sde_lib.VESDE, 1000, (0.01, 90.0), False),
    "ve/bedroom_ncsnpp_continuous": (sde_lib.VESDE, 2000, (0.01, 378.0), True),
    "ve/church_ncsnpp_continuous": (sde_lib.VESDE, 2000, (0.01, 380.0), True),
    "ve/ffhq_256_ncsnpp_continuous": (sde_lib.VESDE, 2000, (0.01, 348.0), True),
    "ve/celebahq_ncsnpp_continuous": (sde_lib.VESDE, 2000, (0.01, 1348.0), True),
    "ve/ncsn/cifar10": (sde_lib.VESDE, 10, (0.01, 1.0), False),
    "ve/ncsn/celeba_124": (sde_lib.VESDE, 500, (0.01, 90.0), False),
    "ve/ncsnv2/cifar10": (sde_lib.VESDE, 232, (0.01, 50.0), False),
    "ve/ncsnv2/bedroom": (sde_lib.VESDE, 1086, (0.01, 190.0), False),
    "vp/cifar10_ddpmpp_continuous": (sde_lib.VPSDE, 1000, (0.1, 20.0), True),
    "vp/ddpm/cifar10": (sde_lib.VPSDE, 1000, (0.1, 20.0), False),
    "vp/ddpm/bedroom": (sde_lib.VPSDE, 1000, (0.1, 20.0), False),  # sets 1000 over the LSUN defaults' 2000
    "subvp/cifar10_ncsnpp_deep_continuous": (sde_lib.subVPSDE, 1000, (0.1, 20.0), True),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SDE))
def test_sde_has_the_reference_numbers(name):
    """The SDE built from the config has the reference's class, N and noise range, checked on its tables.

    VE: the discrete SMLD ladder runs geometrically from sigma_min to sigma_max, and sigma(1) = sigma_max.
    VP / sub-VP: the DDPM betas run linearly from beta_min / N to beta_max / N (1e-4 .. 0.02 for N = 1000, the
    schedule of Ho et al. 2020), and alpha(1) = exp(-(beta_max - beta_min) / 4 - beta_min / 2).
    """
    cls, N, (low, high), continuous = REFERENCE_SDE[name]
    config = load(name)
    sde = sde_lib.get_sde(config)
    assert type(sde) is cls and sde.N == N and config.training.continuous is continuous
    one = torch.ones(1, dtype=torch.float64)
    if cls is sde_lib.VESDE:
        sigmas = sde.discrete_sigmas
        assert (sde.sigma_min, sde.sigma_max) == (low, high)
        assert sigmas.shape == (N,) and math.isclose(sigmas[0].item(), low, rel_tol=1e-12)
        assert math.isclose(sigmas[-1].item(), high, rel_tol=1e-12)
        ratio = (high / low) ** (1.0 / (N - 1))
        torch.testing.assert_close(sigmas[1:] / sigmas[:-1], torch.full((N - 1,), ratio, dtype=torch.float64))
        assert math.isclose(sde.marginal_coeffs(one)[1].item(), high, rel_tol=1e-12)
    else:
        betas = sde.discrete_betas
        assert (sde.beta_0, sde.beta_1) == (low, high)
        assert math.isclose(betas[0].item(), low / N, rel_tol=1e-12)
        assert math.isclose(betas[-1].item(), high / N, rel_tol=1e-12)
        if N == 1000:
            assert math.isclose(betas[0].item(), 1e-4, rel_tol=1e-12)
            assert math.isclose(betas[-1].item(), 0.02, rel_tol=1e-12)
        alpha_1 = math.exp(-(high - low) / 4 - low / 2)
        assert math.isclose(sde.marginal_coeffs(one)[0].item(), alpha_1, rel_tol=1e-12)


@experiments
def test_sde_and_sampler_build_from_every_config(name):
    config = load(name)
    sde = sde_lib.get_sde(config)
    assert type(sde) is SDE_CLASSES[config.training.sde] and sde.N == config.model.num_scales
    if isinstance(sde, sde_lib.VESDE):
        assert (sde.sigma_min, sde.sigma_max) == (config.model.sigma_min, config.model.sigma_max)
    else:
        assert (sde.beta_0, sde.beta_1) == (config.model.beta_min, config.model.beta_max)
    shape = (1, config.data.num_channels, config.data.image_size, config.data.image_size)
    assert callable(samplers.get_sampling_fn(config, sde, shape, None, 1e-3))


# ============================================================================ fields that training and networks read

REQUIRED = {
    "training": ["batch_size", "n_iters", "snapshot_freq", "log_freq", "eval_freq", "snapshot_freq_for_preemption",
                 "snapshot_sampling", "likelihood_weighting", "continuous", "reduce_mean", "sde"],
    "sampling": ["method", "predictor", "corrector", "n_steps_each", "noise_removal", "probability_flow", "snr"],
    "eval": ["begin_ckpt", "end_ckpt", "batch_size", "num_samples", "enable_sampling", "enable_loss", "enable_bpd",
             "bpd_dataset"],
    "data": ["dataset", "root", "image_size", "num_channels", "centered", "random_flip", "uniform_dequantization"],
    "model": ["name", "ema_rate", "num_scales", "sigma_min", "sigma_max", "nf", "normalization", "nonlinearity",
              "scale_by_sigma"],
    "optim": ["optimizer", "lr", "beta1", "eps", "weight_decay", "warmup", "grad_clip"],
}
# what each reference network reads on top of REQUIRED["model"]
NETWORK_FIELDS = {
    "ddpm": ["ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional"],
    "ncsnpp": ["ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional", "fir",
               "fir_kernel", "skip_rescale", "resblock_type", "progressive", "progressive_input",
               "progressive_combine", "init_scale", "embedding_type"],
    "ncsn": ["num_classes"],
}


@experiments
def test_sections_have_the_fields_that_are_read(name):
    config = load(name)
    for section, fields in REQUIRED.items():
        missing = sorted(set(fields) - set(config[section].keys()))
        assert not missing, f"config.{section} lacks {missing}"
    model = config.model
    assert model.name in REFERENCE_MODEL_NAMES
    needed = set(NETWORK_FIELDS.get(model.name, ()))
    if config.training.sde in ("vpsde", "subvpsde"):
        needed |= {"beta_min", "beta_max"}
    if model.name == "ncsnpp" and model.embedding_type == "fourier":
        needed.add("fourier_scale")
    assert not needed - set(model.keys()), f"config.model lacks {sorted(needed - set(model.keys()))}"
    if config.data.dataset == "LSUN":
        assert config.data.category in ("bedroom", "church_outdoor")
    assert isinstance(config.seed, int) and config.device in ("cpu", "cuda")


@pytest.mark.parametrize("cuda", [False, True])
def test_device_is_chosen_when_the_config_is_built(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert load("vp/cifar10_ddpmpp_continuous").device == ("cuda" if cuda else "cpu")


def test_deliberate_repairs():
    """The two reference slips that crashed, and the NCSN class count (see DELIBERATE below)."""
    bedroom = load("ve/ncsnv2/bedroom")
    assert bedroom.training.continuous is False and "continuouse" not in bedroom.training
    celeba = load("ve/ncsn/celeba")
    assert celeba.training.sde == "vesde" and "loss" not in celeba.training
    for name in REFERENCE_EXPERIMENTS:
        config = load(name)
        assert config.data.root == ""
        if config.model.name == "ncsn":
            assert config.model.num_classes == config.model.num_scales


# ============================================================================ the networks, built on the meta device



def build_on_meta(config: ml_collections.ConfigDict) -> torch.nn.Module:
    config = copy.deepcopy(config)
    config.device = "meta"
    with torch.device("meta"):
        return models.create_model(config)


@pytest.fixture(scope="module")
def full_size():
    if not FULL_SIZE_KEYS.is_file():
        pytest.skip(f"reference fixtures not found at {FULL_SIZE_KEYS}")
    return json.loads(FULL_SIZE_KEYS.read_text())


@experiments
def test_network_builds_with_the_configured_noise_scales(name):
    """Every config builds its network; the network's noise-scale table has one entry per scale of the config."""
    config = load(name)
    network = build_on_meta(config)
    assert all(p.device.type == "meta" for p in network.parameters())
    buffers = dict(network.named_buffers())
    if config.model.name == "ncsn":
        rows = {m.num_embeddings for m in network.modules() if isinstance(m, torch.nn.Embedding)}
        assert rows == {config.model.num_scales}, "the conditional norms need one row per noise scale"
    else:
        assert buffers["sigmas"].shape == (config.model.num_scales,)


@pytest.mark.parametrize(
    "name",
    ["ve/cifar10_ncsnpp_continuous", "vp/cifar10_ddpmpp_continuous", "vp/ddpm/cifar10_continuous",
     "ve/ncsnv2/cifar10", "ve/cifar10_ncsnpp_deep_continuous"],
)
def test_full_size_network_matches_the_reference(name, full_size):
    """Parameter count and the multiset of state-dict tensor shapes equal the reference's full-size model's.

    The key names may differ (a model may rename modules, see ``reference_key_map``) but tensors are never
    reshaped, so the shapes must agree one for one.
    """
    expected = full_size[name]
    network = build_on_meta(load(name))
    assert network.__class__ is models.get_model(expected["model_name"])
    assert sum(p.numel() for p in network.parameters()) == expected["num_parameters"]
    ours = collections.Counter(tuple(t.shape) for t in network.state_dict().values())
    theirs = collections.Counter(tuple(shape) for _, shape in expected["keys"])
    assert ours == theirs and len(network.state_dict()) == expected["num_state_dict_entries"]


# ============================================================================ command-line overrides


def parse_command_line(*argv: str) -> ml_collections.ConfigDict:
    """Parse ``--config=<file> --config.a.b=v ...`` as main.py will (absl flags + ml_collections config_flags)."""
    argv = ["main.py", *argv]
    flag_values = flags.FlagValues()
    # config_flags finds the config file in argv when the flag is defined, and defines one flag per field then
    config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_command_line_overrides_change_only_what_they_name():
    name = "vp/cifar10_ddpmpp_continuous"
    config = parse_command_line(
        f"--config={path_of(name)}",
        "--config.training.n_iters=5",
        "--config.training.batch_size=2",
        "--config.model.ema_rate=0.5",
        "--config.model.ch_mult=(1,2)",
        "--config.data.root=/data/cifar10",
        "--config.sampling.predictor=reverse_diffusion",
        "--config.device=cpu",
    )
    assert config.training.n_iters == 5 and config.training.batch_size == 2
    assert config.model.ema_rate == 0.5 and tuple(config.model.ch_mult) == (1, 2)
    assert config.data.root == "/data/cifar10" and config.sampling.predictor == "reverse_diffusion"
    assert config.device == "cpu"
    before, after = flatten(load(name).to_dict()), flatten(config.to_dict())
    assert before.keys() == after.keys()
    named = {"training.n_iters", "training.batch_size", "model.ema_rate", "model.ch_mult", "data.root",
             "sampling.predictor", "device"}
    changed = {key for key in before if before[key] != after[key]}
    # on a machine without CUDA the device was already "cpu"
    assert changed == named - ({"device"} if before["device"] == "cpu" else set())


def test_command_line_rejects_bad_overrides():
    config_file = f"--config={path_of('ve/cifar10_ncsnpp_continuous')}"
    with pytest.raises(flags.Error):
        parse_command_line(config_file, "--config.training.n_iters=many")  # not an int
    with pytest.raises(AttributeError, match="n_iters"):  # a misspelt field, with the right name suggested
        parse_command_line(config_file, "--config.training.n_iter=5")


def test_ncsn_class_count_follows_the_number_of_scales():
    config = parse_command_line(f"--config={path_of('ve/ncsn/cifar10')}", "--config.model.num_scales=20")
    assert config.model.num_classes == 20 and sde_lib.get_sde(config).N == 20
    config = load("ve/ncsn/cifar10")
    config.model.num_scales = 7
    assert copy.deepcopy(config).model.num_classes == 7


# ============================================================================ every value, against the reference itself

# the reference's git repository (a bare mirror beside this one, or $SCORE_SDE_REFERENCE_REPO); skipped without it
MIRROR = ROOT.parent / ".mirror" / "yang-song+score_sde_pytorch" / "repo"
REFERENCE_REPO = Path(os.environ.get("SCORE_SDE_REFERENCE_REPO", MIRROR))
REFERENCE_COMMIT = "cb1f359f4aadf0ff9a5e122fe8fffc9451fd6e44"
# differences from the reference, on purpose; anything else must be identical in value and type
DELIBERATE = {
    "*": {"device": "a string chosen at get_config() time, not torch.device('cuda:0')",
          "data.root": "added: the local dataset folder (the reference downloaded through tfds)"},
    "ve/ncsnv2/bedroom": {"training.continuouse": "misspelt in the reference: training.continuous is False here"},
    "ve/ncsn/celeba": {"training.loss": "the reference set training.loss, which nothing reads, for training.sde"},
    "ve/ncsn/*": {"model.num_classes": "added: rows of the conditional InstanceNorm++, equal to num_scales"},
    "ve/celebahq_ncsnpp_continuous": {f"eval.{f}": "added, from the LSUN defaults" for f in
                                      ("enable_sampling", "enable_loss", "enable_bpd", "bpd_dataset")}
    | {"model.beta_min": "added, unused by VE", "model.beta_max": "added, unused by VE"},
}
DELIBERATE["ve/ffhq_ncsnpp_continuous"] = DELIBERATE["ve/celebahq_ncsnpp_continuous"]
RENAMED = {("ve/ncsnv2/bedroom", "training.continuouse"): ("training.continuous", False),
           ("ve/ncsn/celeba", "training.loss"): ("training.sde", "vesde")}


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def reference_source(path: str) -> str:
    return subprocess.run(["git", "-C", str(REFERENCE_REPO), "show", f"{REFERENCE_COMMIT}:{path}"],
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def reference_defaults():
    try:
        return {f"configs.default_{d}_configs": reference_source(f"configs/default_{d}_configs.py") for d in DEFAULTS}
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"reference repository (commit {REFERENCE_COMMIT[:7]}) not found at {REFERENCE_REPO}")


def reference_config(source: str, defaults: dict[str, str], monkeypatch, function: str) -> ml_collections.ConfigDict:
    """Run a reference config file with the reference's default modules standing in for ours."""
    for module_name, default_source in defaults.items():
        module = types.ModuleType(module_name)
        exec(compile(default_source, module_name, "exec"), module.__dict__)
        monkeypatch.setitem(sys.modules, module_name, module)
    namespace: dict = {}
    exec(compile(source, "reference_config", "exec"), namespace)
    return namespace[function]()


def deliberate_for(name: str) -> dict[str, str]:
    folder = name.rsplit("/", 1)[0]
    return {**DELIBERATE["*"], **DELIBERATE.get(f"{folder}/*", {}), **DELIBERATE.get(name, {})}


@pytest.mark.parametrize("name", REFERENCE_EXPERIMENTS + [f"default_{d}_configs" for d in DEFAULTS])
def test_every_value_equals_the_reference(name, reference_defaults, monkeypatch):
    is_default = name.startswith("default_")
    source = reference_source(f"configs/{name}.py")
    theirs = flatten(reference_config(source, reference_defaults, monkeypatch,
                                      "get_default_configs" if is_default else "get_config").to_dict())
    monkeypatch.undo()
    ours_config = (importlib.import_module(f"configs.{name}").get_default_configs() if is_default else load(name))
    ours = flatten(ours_config.to_dict())
    allowed = deliberate_for(name)
    for (experiment, old), (new, value) in RENAMED.items():
        if experiment == name:
            assert theirs.pop(old) is not None and ours[new] == value
            theirs[new] = value

    def same(key: str) -> bool:  # equal in value and in type (a command-line override keeps the field's type)
        return key in ours and ours[key] == theirs[key] and type(ours[key]) is type(theirs[key])

    differ = {key: (theirs[key], ours.get(key, "<missing>")) for key in theirs if key not in allowed and not same(key)}
    assert not differ, f"{name}: (reference, ours) {differ}"
    extra = set(ours) - set(theirs) - set(allowed) - declared_fields()  # the toolkit's fields, declared once
    assert not extra, f"{name}: fields the reference does not have {sorted(extra)}"
