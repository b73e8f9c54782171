"""System identification as in EndoGSim: recover Young's modulus from particle positions alone."""

import numpy as np
import torch

from endogsim.physics import Material, MPMConfig, MPMSimulator, Interactions, Tool, block_particles


def test_recover_youngs_modulus_from_a_tool_indentation():
    # tissue block on the floor under gravity, a tool presses 7 cm into its top and holds
    cfg = MPMConfig(n_grid=12, dt=2e-3, wall="slip", gravity=(0, 0, -9.8), checkpoint_every=25)
    p = block_particles((0.3, 0.3, 0.17), (0.7, 0.7, 0.42), 1 / 24)  # 600 particles
    tool = Tool((0.06, 0.06, 0.06), (0.0, 0.1, 0.2), ((0.5, 0.5, 0.49), (0.5, 0.5, 0.42), (0.5, 0.5, 0.42)))
    E_true = 3e3
    sim = MPMSimulator(cfg, p, [Material(E=E_true, nu=0.3)], Interactions(tool=tool))
    n_substeps, frame_every = 100, 10
    with torch.no_grad():
        observed = sim.rollout(n_substeps, frame_every, E=torch.tensor([E_true])).double()  # [10, N, 3]

    log_E = torch.tensor([np.log10(3 * E_true)], dtype=torch.float64, requires_grad=True)  # 3x too stiff
    opt = torch.optim.LBFGS([log_E], lr=1, max_iter=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = ((sim.rollout(n_substeps, frame_every, E=10**log_E).double() - observed) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    E = 10 ** log_E.item()
    assert abs(E / E_true - 1) < 0.05, E
