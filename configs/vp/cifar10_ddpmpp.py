"""CIFAR-10 DDPM++ (discrete DDPM): VP SDE, DDPM++ network, PC: ancestral sampling, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The continuous experiment (configs/vp/cifar10_ddpmpp_continuous.py) trained on the DDPM steps and sampled
    ancestrally."""
    config = load_config(Path(__file__).resolve().parent / "cifar10_ddpmpp_continuous.py")
    config.training.continuous = False
    config.sampling.predictor = "ancestral_sampling"
    return config
