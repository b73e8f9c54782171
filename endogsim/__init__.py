"""EndoGSim: endoscopic video -> 4D Gaussians -> objects and MPM particles -> materials refined by a
differentiable MPM -> interactive simulation. See endogsim/README.md for the stages and modules.

The public classes load lazily (the MPM imports NVIDIA Warp), e.g. `from endogsim import PhysicsScene`.
"""

_EXPORTS = {
    "GaussianModel": "gaussians", "MaterialPrior": "material_prior", "PhysicsScene": "scene",
    "SceneObject": "scene", "SupportPlane": "decompose", "RefineConfig": "refine", "RefineResult": "refine",
    "Observations": "refine", "refine_scene": "refine", "simulate_scene": "refine", "Simulation": "simulate",
    "run_action": "simulate", "train_reconstruction": "train", "make_surgical_scene": "synthetic_scene",
    "GaussianBinding": "binding", "Config": "config", "ReconConfig": "config", "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"endogsim.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'endogsim' has no attribute {name!r}")
