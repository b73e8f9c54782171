"""The same case on Warp's cuda and cpu devices (skipped without a GPU)."""

import numpy as np
import pytest
import torch

from endogsim.physics import Material, MPMConfig, MPMSimulator, Interactions, Tool, block_particles
from endogsim.tests.conftest import cuda_available

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")]


def _sim(device):
    cfg = MPMConfig(n_grid=16, dt=1e-3, gravity=(0, 0, -9.8), device=device)
    p = block_particles((0.3, 0.3, 0.2), (0.7, 0.7, 0.45), 1 / 32)
    tool = Tool((0.05, 0.05, 0.05), (0.0, 0.1), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.42)))
    return MPMSimulator(cfg, p, [Material(model="viscoplastic_stvk", E=5e3, yield_stress=50.0)], Interactions(tool=tool))


def test_cuda_matches_cpu_forward_and_gradient():
    cpu, gpu = _sim("cpu"), _sim("cuda")
    cpu.step(50)
    gpu.step(50)
    np.testing.assert_allclose(gpu.positions(), cpu.positions(), atol=1e-4)  # atomics sum in another order
    grads = []
    for sim in (cpu, gpu):
        E = torch.tensor([5e3], dtype=torch.float64, requires_grad=True)
        sim.rollout(40, 20, E=E).double().pow(2).sum().backward()
        grads.append(E.grad.item())
    assert abs(grads[1] / grads[0] - 1) < 1e-3
