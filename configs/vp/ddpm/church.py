"""LSUN church 256 DDPM (discrete): VP SDE, DDPM network, PC: ancestral sampling, no corrector."""

from pathlib import Path

from configs import load_config


def get_config():
    """The LSUN bedroom experiment (configs/vp/ddpm/bedroom.py) on the church_outdoor category."""
    config = load_config(Path(__file__).resolve().parent / "bedroom.py")
    config.data.category = "church_outdoor"
    return config
