"""Full-rollout gradients of the Warp MPM (wp.Tape inside a torch.autograd.Function) against
central finite differences.

The Warp kernels run in float32, where a finite difference over 60 substeps is dominated by
round-off (about 1% at any step size). The finite differences are therefore taken on the float64
PyTorch reference, which test_reference.py shows runs the same equations step by step.
"""

import numpy as np
import pytest
import torch

from endogsim.physics import Material, MPMConfig, MPMSimulator, block_particles
from endogsim.physics import reference

N_SUBSTEPS, FRAME_EVERY = 60, 20


def _sim(model: str, checkpoint_every):
    cfg = MPMConfig(n_grid=12, dt=1e-3, checkpoint_every=checkpoint_every)
    p = block_particles((0.35, 0.35, 0.35), (0.65, 0.65, 0.6), 1 / 24)  # 294 particles, free flight
    p.v = 0.3 * np.stack([np.sin(6 * p.x[:, 2]), np.cos(5 * p.x[:, 0]), 0.5 * np.sin(7 * p.x[:, 1])], 1)
    return MPMSimulator(cfg, p, [Material(model=model, E=2e3, nu=0.3, density=1000.0)])


def _loss_fn(sim):
    """Squared distance of the particle positions at 3 frames to those of another material."""
    target = reference.rollout(sim, N_SUBSTEPS, FRAME_EVERY, E=torch.tensor([3e3], dtype=torch.float64),
                               nu=torch.tensor([0.35], dtype=torch.float64))
    return lambda frames: ((frames.double() - target) ** 2).sum()


def _warp_grads(sim, loss):
    log_E = torch.tensor([np.log10(2e3)], dtype=torch.float64, requires_grad=True)
    nu = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    loss(sim.rollout(N_SUBSTEPS, FRAME_EVERY, E=10**log_E, nu=nu)).backward()
    return log_E.grad.item(), nu.grad.item()


@pytest.mark.parametrize("model, checkpoint_every", [("neo_hookean", None), ("fixed_corotated", 16)])
def test_gradient_matches_central_finite_differences(model, checkpoint_every):
    sim = _sim(model, checkpoint_every)
    loss = _loss_fn(sim)
    d_log_E, d_nu = _warp_grads(sim, loss)

    h = 1e-3
    log_E, nu = np.log10(2e3), 0.3

    def L(log_E, nu):
        with torch.no_grad():
            return loss(reference.rollout(sim, N_SUBSTEPS, FRAME_EVERY, E=torch.tensor([10**log_E]), nu=torch.tensor([nu]))).item()

    fd_log_E = (L(log_E + h, nu) - L(log_E - h, nu)) / (2 * h)
    fd_nu = (L(log_E, nu + h) - L(log_E, nu - h)) / (2 * h)
    assert abs(d_log_E / fd_log_E - 1) < 1e-3, (d_log_E, fd_log_E)
    assert abs(d_nu / fd_nu - 1) < 1e-3, (d_nu, fd_nu)


def test_checkpointed_gradient_equals_full_tape_gradient():
    full = _sim("fixed_corotated", None)
    loss = _loss_fn(full)
    g_full = _warp_grads(full, loss)
    for segment in (7, 20):  # segments that do and do not line up with the frames
        g_ckpt = _warp_grads(_sim("fixed_corotated", segment), loss)
        np.testing.assert_allclose(g_ckpt, g_full, rtol=1e-5)


def test_gradient_reaches_each_object_separately():
    cfg = MPMConfig(n_grid=12, dt=1e-3)
    p = block_particles((0.35, 0.35, 0.35), (0.65, 0.65, 0.6), 1 / 24)
    p.object_id = (p.x[:, 0] > 0.5).astype(np.int64)  # two objects side by side
    p.v = 0.3 * np.stack([np.sin(6 * p.x[:, 2]), np.cos(5 * p.x[:, 0]), 0 * p.x[:, 0]], 1)
    sim = MPMSimulator(cfg, p, [Material(E=2e3), Material(E=4e3, nu=0.25)])
    log_E = torch.log10(torch.tensor([2e3, 4e3], dtype=torch.float64)).requires_grad_()
    frames = sim.rollout(40, 40, E=10**log_E)
    left = torch.as_tensor(p.object_id == 0)
    (frames[-1, left, 2].double().sum()).backward()  # a loss on object 0's particles only
    g = log_E.grad
    assert torch.isfinite(g).all() and g[0] != 0 and g[1] != 0 and g[0] != g[1]
