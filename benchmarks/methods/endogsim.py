"""EndoGSim (`endogsim/`) on the physics task: its literature-table material prior, refined (or not)
through the differentiable MPM and renderer on the fitted frames, then the whole clip simulated
with the recovered materials, on the clip's own particles as the task's protocol says
(`endogsim.clip.ground_truth_scene`; `make reproduce-endogsim` runs the same from the video).
Nothing is trained ahead: the refinement is the method, run once per clip (about 7 minutes on one
core of the loaded 2-core machine for the 128 x 160 endoscopy clip)."""

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
            from endogsim.clip import clip_observations, ground_truth_scene, known_forces, truth_materials
            from endogsim.material_prior import MaterialPrior
            from endogsim.refine import Observations, RefineConfig, refine_scene, simulate_scene

            model = truth_materials(clip)[0].model  # E and nu are fitted, not the class
            prior = [MaterialPrior().table(label).to_material(model) for label in ("liver", "kidney")]
            scene = ground_truth_scene(clip, prior)
            forces, obs = known_forces(clip), clip_observations(clip)
            materials, E = prior, [m.E for m in prior]
            if self.refine:
                fit = Observations(obs.images[:fit_frames], obs.tool_masks[:fit_frames], obs.times[:fit_frames])
                result = refine_scene(scene, fit, forces, RefineConfig(iterations=30))
                materials, E = result.materials, list(result.E)
            images, _ = simulate_scene(scene, materials, obs.times.numpy(), forces)  # [F, H, W, 3]
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
