"""LSUN church 256 NCSN++ (continuous): VE SDE, NCSN++ network, PC: reverse diffusion + Langevin."""

from pathlib import Path

from configs import load_config


def get_config():
    """The LSUN bedroom experiment (configs/ve/bedroom_ncsnpp_continuous.py) on the church_outdoor category."""
    config = load_config(Path(__file__).resolve().parent / "bedroom_ncsnpp_continuous.py")
    config.data.category = "church_outdoor"
    config.model.sigma_max = 380  # the one setting, besides the data, where the reference's two differ
    return config
