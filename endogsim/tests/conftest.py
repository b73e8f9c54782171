"""Shared fixtures: one torch thread; Warp on CPU, quiet, with debug bounds checks where a test asks for them."""

import pytest
import torch
import warp as wp

wp.config.quiet = True
torch.set_num_threads(1)  # one thread for the tests (the entry points take torch's default or --threads)


def cuda_available() -> bool:
    wp.init()
    return wp.is_cuda_available()


@pytest.fixture
def warp_debug():
    """Compile the MPM kernels in Warp's debug mode (bounds-checked array access) for one test."""
    from endogsim.physics import kernels

    wp.set_module_options({"mode": "debug"}, module=kernels)
    try:
        yield
    finally:
        wp.set_module_options({"mode": None}, module=kernels)
