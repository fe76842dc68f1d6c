"""CIFAR-10 NCSN++ deep (continuous): VP SDE, NCSN++ (8 blocks per resolution), PC: Euler-Maruyama, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The DDPM++ deep experiment (configs/vp/cifar10_ddpmpp_deep_continuous.py) with NCSN++'s FIR resampling and
    residual input pyramid."""
    config = load_config(Path(__file__).resolve().parent / "cifar10_ddpmpp_deep_continuous.py")
    config.model.fir = True
    config.model.progressive_input = "residual"
    return config
