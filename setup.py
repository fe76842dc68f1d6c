"""Installable package of the score-SDE toolkit: ``pip install .`` (or ``-e .``, ``.[test]``)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
PACKAGES = ["base_lib", "sde_lib", "samplers", "sample_quality", "models", "configs", "train_lib", "data_lib", "jobs"]

setup(
    name="score-sde-toolkit",
    version="0.1.0",
    description="Score-based generative modelling through SDEs: VP/sub-VP/VE SDEs, samplers and likelihoods in PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=PACKAGES + [f"{name}.*" for name in PACKAGES]),
    # experiment configs are files passed by path (configs/vp/..., configs/ve/ncsnv2/...), not subpackages
    package_data={"configs": ["*/*.py", "*/*/*.py"]},
    install_requires=[
        "torch>=2.4",  # torch.get_autocast_dtype(device), torch.nn.attention.sdpa_kernel, torch.amp.GradScaler(device)
        "torchsde>=0.2.6",
        "scipy>=1.10",
        "numpy>=1.24",
        "ml-collections>=0.1.1",
        "absl-py>=1.0",
        "tqdm>=4.60",
        "scikit-learn>=1.2",  # the 8x8 digits that ship with it: the default demo's data
        "scikit-image>=0.21",  # its lfw_subset faces and sample photos
        "pillow>=9.1",  # image files: PNG sample grids, image-folder datasets
        "matplotlib>=3.5",  # scatter plots of 2-D samples
        "tensorboard>=2.10",  # training curves (torch.utils.tensorboard)
    ],
    extras_require={
        "test": ["pytest>=7.0", "pytest-xdist>=3.0"],
        # FID / KID / IS with the standard Inception network; torch-fidelity needs a torch + torchvision pair that
        # import together (PyPI's torchvision does not import beside the CPU build that constraints.txt pins)
        "metrics": ["torch-fidelity>=0.3"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
