"""3D-IDE: 3D perception emerging in a video VLM's visual encoder (arXiv 2604.03296, CVPR 2026).

The inference model is LLaVA-Video (transformers' LLaVA-OneVision classes) with Video-3D LLM's ground
head; the verifier, the 3D teacher and the projection exist only in training (`Supervision`).

The public classes load on first use, so that `import ide3d` stays cheap (no transformers):

    from ide3d import load_pretrained
    model, processor = load_pretrained("results/ide3d/run/final")
"""

_EXPORTS = {  # name -> module of the package that defines it
    "IDE3DForConditionalGeneration": "model", "build_model": "model", "load_pretrained": "model",
    "save_pretrained": "model", "IDE3DProcessor": "processing", "GroundingHead": "grounding",
    "Verifier": "verifier", "GeometryTeacher": "teacher", "Supervision": "supervision", "Trainee": "supervision",
    "Config": "config", "ModelConfig": "config", "SupervisionConfig": "config", "TrainConfig": "config",
    "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ide3d.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ide3d' has no attribute {name!r}")
