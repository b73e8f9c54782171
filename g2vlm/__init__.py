"""G2VLM: a geometry-grounded VLM for 3D reconstruction and spatial reasoning (arXiv 2511.21688).

The text's system (geometry encoder, geometry-biased cross-attention into a Qwen2 language model,
reconstruction / scene-graph / alignment / text heads) with the official design's RGB-only path (a
Pi3-style reconstruction network). See README.md for where it departs from the official model.
"""

from g2vlm.fusion import Fusion, GeometryCrossAttention
from g2vlm.geometry import GeometryEncoder, GeometryTokens
from g2vlm.model import G2VLM, G2VLMGeometry, build_model
from g2vlm.recon import ReconstructionNet
from g2vlm.relations import RELATIONS

__all__ = [
    "G2VLM",
    "G2VLMGeometry",
    "GeometryEncoder",
    "GeometryTokens",
    "GeometryCrossAttention",
    "Fusion",
    "ReconstructionNet",
    "RELATIONS",
    "build_model",
]
