"""FFHQ 256 NCSN++ (continuous): VE SDE, NCSN++ network, PC: reverse diffusion + Langevin."""

from pathlib import Path

from configs import load_config


def get_config():
    """The CelebA-HQ experiment of the same size (configs/ve/celebahq_256_ncsnpp_continuous.py) on FFHQ."""
    config = load_config(Path(__file__).resolve().parent / "celebahq_256_ncsnpp_continuous.py")
    config.data.dataset = "FFHQ"
    # the reference's own TFRecord file; this toolkit reads data.root
    config.data.tfrecords_path = "/home/yangsong/ncsc/ffhq/ffhq-r08.tfrecords"
    return config
