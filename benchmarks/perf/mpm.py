"""EndoGSim's MPM: Warp kernels against the PyTorch reference, backward over forward, and the
memory of a long differentiable rollout with and without checkpointing.

`python -m benchmarks.perf mpm [--quick]`
"""

from __future__ import annotations

import time

import numpy as np
import torch
import warp as wp

from benchmarks.perf import Measurement, PerfReport
from endogsim.physics import Material, MPMConfig, MPMSimulator, block_particles
from endogsim.physics import reference

wp.config.quiet = True


def _block_sim(n_particles: int, n_grid: int, device: str = "cpu", **config) -> MPMSimulator:
    """A cube of about n_particles particles, 8 per grid cell, in the middle of the domain, with a
    shear velocity field so that the stress is not zero."""
    dx = 1.0 / n_grid
    side = (n_particles / 8) ** (1 / 3) * dx  # 2 x 2 x 2 particles per cell
    lo, hi = 0.5 - side / 2, 0.5 + side / 2
    p = block_particles((lo, lo, lo), (hi, hi, hi), dx / 2)
    p.v = 0.05 * np.stack([np.sin(6 * p.x[:, 2]), np.cos(5 * p.x[:, 0]), 0 * p.x[:, 0]], 1)
    cfg = MPMConfig(n_grid=n_grid, dt=1e-3, device=device, **config)
    return MPMSimulator(cfg, p, [Material(model="fixed_corotated", E=5e3, nu=0.3)])


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("mpm", "MLS-MPM substeps (Warp kernels vs PyTorch reference), backward/forward, checkpoint memory")
    devices = ["cpu"] + (["cuda"] if wp.is_cuda_available() else [])
    sizes = [(1_000, 16), (4_000, 24)] if quick else [(10_000, 48), (50_000, 64), (200_000, 96)]
    reference_max = 4_000 if quick else 50_000
    substeps = 2 if quick else 5
    repeats = 2 if quick else 3

    # 1. forward throughput, particle-substeps per second
    for n, n_grid in sizes:
        impls = {}
        for device in devices:
            sim = _block_sim(n, n_grid, device, check_every=0)
            impls[f"warp-{device}"] = lambda sim=sim: (sim.step(substeps), wp.synchronize_device(sim.device))
        if n <= reference_max:
            sim_ref = _block_sim(n, n_grid, check_every=0)
            values = {k: torch.tensor([getattr(sim_ref.materials[0], k)], dtype=torch.float64)
                      for k in ("E", "nu", "density", "yield_stress", "plastic_viscosity")}
            mat = reference.particle_materials(sim_ref, values)
            state = reference.initial_state(sim_ref)

            def ref_step(sim_ref=sim_ref, mat=mat, state=state):
                s = state
                for i in range(substeps):
                    s = reference.substep(sim_ref, s, mat, i)

            # the reference is the baseline of the ratio, so ratio = Warp speed-up
            impls = {"torch-reference-cpu": ref_step, **impls}
        real_n = _block_sim(n, n_grid).n
        report.compare(f"forward {real_n} particles", impls, items=real_n * substeps, unit="particle-substeps",
                       repeats=repeats, memory=False)
    report.notes.append(
        f"The PyTorch reference (float64, vectorised over particles, a Python loop over the 27 stencil nodes) "
        f"runs only up to {reference_max} particles; above that it takes minutes per case."
    )

    # 2. backward over forward of a differentiable rollout (one tape, no checkpointing)
    n, n_grid, rollout = (500, 12, 20) if quick else (10_000, 48, 50)
    for device in devices:
        sim = _block_sim(n, n_grid, device)
        E = torch.tensor([5e3], dtype=torch.float64, requires_grad=True)
        fwd, bwd = [], []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            frames = sim.rollout(rollout, rollout, E=E)
            wp.synchronize_device(sim.device)
            t1 = time.perf_counter()
            frames.double().pow(2).sum().backward()
            wp.synchronize_device(sim.device)
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
        fwd, bwd = float(np.median(fwd[1:])), float(np.median(bwd[1:]))
        case = f"rollout {sim.n} particles x {rollout} substeps ({device})"
        report.add(Measurement("forward (taped)", case, fwd, fwd, fwd, repeats, items=sim.n * rollout, unit="particle-substeps"))
        report.add(Measurement("backward", case, bwd, bwd, bwd, repeats, items=sim.n * rollout, unit="particle-substeps",
                               ratio=fwd / bwd))
        report.notes.append(f"{case}: backward / forward = {bwd / fwd:.2f}")

    # 3. peak memory of a long differentiable rollout, with and without checkpointing
    n, n_grid, long = (300, 12, 100) if quick else (2_000, 16, 1000)
    segment = int(np.sqrt(long))
    impls = {}
    for name, ckpt in [("full tape", None), (f"checkpoint every {segment}", segment)]:
        sim = _block_sim(n, n_grid, checkpoint_every=ckpt)

        def fwd_bwd(sim=sim):
            E = torch.tensor([5e3], dtype=torch.float64, requires_grad=True)
            sim.rollout(long, long, E=E).double().pow(2).sum().backward()
            sim._segment = None  # free the per-substep buffers, so every call allocates them again

        impls[name] = fwd_bwd
    report.compare(f"forward+backward {sim.n} particles x {long} substeps (cpu)", impls, items=sim.n * long,
                   unit="particle-substeps", repeats=1, warmup=0)
    # RSS hides memory the allocators keep between calls, so also count the Warp arrays held at the peak
    state = sim.n * (2 * (12 + 12 + 36 + 36) + 4)  # x, v, C, F with their gradients, damage
    grid = (n_grid + 1) ** 3 * 2 * (12 + 4 + 12)  # momentum, mass, velocity with gradients
    full = (long + 1) * state + long * grid
    ckpt = (segment + 1) * state + segment * grid + (long // segment) * sim.n * (12 + 12 + 36 + 36 + 4)
    report.notes.append(
        f"Warp arrays held at the peak of the {long}-substep rollout: full tape {full / 2**20:.1f} MiB, "
        f"checkpoint every {segment} substeps {ckpt / 2**20:.1f} MiB ({full / ckpt:.0f}x less); "
        f"checkpointing re-simulates each segment once in the backward pass."
    )
    return report
