"""Installable package of the score-SDE toolkit: ``pip install .`` (or ``-e .``, ``.[test]``)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="score-sde-toolkit",
    version="0.1.0",
    description="Score-based generative modelling through SDEs: VP/sub-VP/VE SDEs, samplers and likelihoods in PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sde_lib", "sde_lib.*", "samplers", "samplers.*", "sample_quality", "sample_quality.*", "models", "models.*", "configs", "configs.*"]),
    install_requires=[
        "torch>=2.1",
        "torchsde>=0.2.6",
        "scipy>=1.10",
        "numpy>=1.24",
        "ml-collections>=0.1.1",
        "absl-py>=1.0",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7.0", "pytest-xdist>=3.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
