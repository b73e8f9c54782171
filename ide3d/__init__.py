"""3D-IDE: 3D perception emerging in a video VLM's visual encoder (arXiv 2604.03296, CVPR 2026).

The inference model is LLaVA-Video (transformers' LLaVA-OneVision classes) with Video-3D LLM's ground
head; the verifier, the 3D teacher and the projection exist only in training (`Supervision`).
"""

from ide3d.grounding import GroundingHead
from ide3d.model import IDE3DForConditionalGeneration, build_model, load_pretrained, save_pretrained
from ide3d.processing import IDE3DProcessor
from ide3d.supervision import Supervision, Trainee
from ide3d.teacher import GeometryTeacher
from ide3d.verifier import Verifier

__all__ = [
    "IDE3DForConditionalGeneration",
    "IDE3DProcessor",
    "GroundingHead",
    "Verifier",
    "GeometryTeacher",
    "Supervision",
    "Trainee",
    "build_model",
    "load_pretrained",
    "save_pretrained",
]
