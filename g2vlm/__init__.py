"""G2VLM: a geometry-grounded VLM for 3D reconstruction and spatial reasoning (arXiv 2511.21688).

The text's system (geometry encoder, geometry-biased cross-attention into a Qwen2 language model,
reconstruction / scene-graph / alignment / text heads) with the official design's RGB-only path (a
Pi3-style reconstruction network). See README.md for where it departs from the official model.

The public classes load on first use, so that `import g2vlm` stays cheap (no torch):

    from g2vlm import G2VLM
    model = G2VLM.from_pretrained("results/g2vlm/g2vlm/stage2/final")
"""

_EXPORTS = {  # name -> module of the package that defines it
    "G2VLM": "model", "G2VLMGeometry": "model", "build_model": "model", "GeometryEncoder": "geometry",
    "GeometryTokens": "geometry", "GeometryCrossAttention": "fusion", "Fusion": "fusion",
    "ReconstructionNet": "recon", "RelationalGrounding": "heads", "RELATIONS": "relations",
    "Config": "config", "ModelConfig": "config", "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"g2vlm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'g2vlm' has no attribute {name!r}")
