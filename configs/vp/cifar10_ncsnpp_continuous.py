"""CIFAR-10 NCSN++ (continuous): VP SDE, NCSN++ network, PC: Euler-Maruyama, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The DDPM++ experiment (configs/vp/cifar10_ddpmpp_continuous.py) with NCSN++'s FIR resampling and residual
    input pyramid."""
    config = load_config(Path(__file__).resolve().parent / "cifar10_ddpmpp_continuous.py")
    config.model.fir = True
    config.model.progressive_input = "residual"
    return config
