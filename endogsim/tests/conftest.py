"""Shared fixtures: Warp on CPU, quiet, with debug bounds checks where a test asks for them."""

import pytest
import warp as wp

wp.config.quiet = True


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
