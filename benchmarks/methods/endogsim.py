"""EndoGSim (`endogsim/`) on the physics task: its literature-table material prior, refined (or not)
through the differentiable MPM and renderer on the fitted frames, then the whole clip simulated
with the recovered materials. The same calls as `endogsim.refine.run_synthetic_demo`, kept apart
so the adapter can hand back the predicted frames. Nothing is trained ahead: the refinement is
the method, run once per clip (about 75 s on 2 CPU cores)."""

from __future__ import annotations

import torch

from benchmarks.methods import Method


class EndoGSimMethod(Method):
    name = "endogsim"
    paper = "endogsim"
    tasks = ("physics",)
    refine = True

    def load(self) -> None:
        self._cache = {}

    def parameters(self) -> int | None:
        return None  # materials, not a network

    def _solve(self, clip, fit_frames: int) -> tuple[list[float], torch.Tensor]:
        """-> (E per object, frames [F, 3, H, W])."""
        key = (str(clip), fit_frames)
        if key not in self._cache:
            from endogsim.refine import (
                Observations,
                RefineConfig,
                prior_materials,
                refine_materials,
                simulate_frames,
                synthetic_problem,
            )

            setup, particles, gaussians, static, camera, obs, gt = synthetic_problem(clip)
            materials, _ = prior_materials(gt)
            E = [m.E for m in materials]
            if self.refine:
                fit = Observations(
                    obs.images[:fit_frames], obs.tool_masks[:fit_frames], obs.times[:fit_frames]
                )
                result = refine_materials(
                    particles,
                    gaussians,
                    materials,
                    setup.config,
                    setup.scene,
                    camera,
                    fit,
                    RefineConfig(iterations=30),
                    background=static,
                )
                materials, E = result.materials, list(result.E)
            images, _ = simulate_frames(
                particles, gaussians, materials, setup.config, setup.scene, camera, setup.times, static
            )  # [F, H, W, 3]
            self._cache[key] = ([float(e) for e in E], images.detach().permute(0, 3, 1, 2).float().cpu())
        return self._cache[key]

    def answer(self, task: str, queries: list) -> list:
        out = []
        for q in queries:
            E, frames = self._solve(q.clip, q.fit_frames)
            out.append(E[q.index] if q.kind == "E" else frames[q.index])
        return out


class EndoGSimPriorMethod(EndoGSimMethod):
    name = "endogsim-prior"
    refine = False
