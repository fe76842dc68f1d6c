"""CIFAR-10 DDPM (continuous): VP SDE, DDPM network, PC: Euler-Maruyama, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The DDPM experiment (configs/vp/ddpm/cifar10.py) trained in continuous time, sampled by Euler-Maruyama."""
    config = load_config(Path(__file__).resolve().parent / "cifar10.py")
    config.training.continuous = True
    config.sampling.predictor = "euler_maruyama"
    return config
