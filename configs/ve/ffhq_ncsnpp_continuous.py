"""FFHQ 1024 NCSN++ (continuous): VE SDE, NCSN++ network, PC: reverse diffusion + Langevin."""

from pathlib import Path

from configs import load_config


def get_config():
    """The CelebA-HQ experiment of the same size (configs/ve/celebahq_ncsnpp_continuous.py) on FFHQ."""
    config = load_config(Path(__file__).resolve().parent / "celebahq_ncsnpp_continuous.py")
    config.training.reduce_mean = True  # the one setting, besides the data, where the reference's two differ
    config.data.dataset = "FFHQ"
    # the reference's own TFRecord file; this toolkit reads data.root
    config.data.tfrecords_path = "/raid/song/ffhq-dataset/ffhq/ffhq-r10.tfrecords"
    return config
