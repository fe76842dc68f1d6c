"""CelebA 64 NCSN + NCSNv2 techniques 1, 2, 4, 5 (EMA): discrete VE SDE, NCSN net, annealed Langevin."""

from pathlib import Path

from configs import load_config


def get_config():
    """The techniques 1, 2, 4 experiment (configs/ve/ncsn/celeba_124.py) with technique 5, an EMA of the weights."""
    config = load_config(Path(__file__).resolve().parent / "celeba_124.py")
    config.model.ema_rate = 0.999
    return config
