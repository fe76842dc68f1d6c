"""Test-wide settings: one intra-op thread per test process (pytest-xdist runs one process per core); the
``one_thread`` fixture for tests whose figures must not depend on the thread count (use it with
``pytestmark = pytest.mark.usefixtures("one_thread")``)."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (bit-identical float sums in-process and in ``main.py`` children)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
