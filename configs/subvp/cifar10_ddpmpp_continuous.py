"""CIFAR-10 DDPM++ (continuous): sub-VP SDE, DDPM++ network, PC: Euler-Maruyama, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The VP experiment of the same name (configs/vp/cifar10_ddpmpp_continuous.py) with the sub-VP SDE."""
    config = load_config(Path(__file__).resolve().parents[1] / "vp" / "cifar10_ddpmpp_continuous.py")
    config.training.sde = "subvpsde"
    return config
