"""The shared tasks: each fixes the held-out inputs, the protocol a method answers, and its scoring
(`common.metrics` only). See `base.py` for what a task is."""

from benchmarks.tasks.depth import DepthTask
from benchmarks.tasks.grounding import GroundingTask
from benchmarks.tasks.nvs import NVSTask
from benchmarks.tasks.physics import PhysicsTask
from benchmarks.tasks.pose import PoseTask
from benchmarks.tasks.qa import QATask
from benchmarks.tasks.recon import ReconTask

TASKS = {t.name: t for t in (DepthTask, PoseTask, ReconTask, NVSTask, GroundingTask, QATask, PhysicsTask)}
# The one number per task that the summary table shows.
HEADLINE = {
    "depth": "indoor_delta1_aligned",
    "pose": "auc_30",
    "recon": "fscore",
    "nvs": "psnr",
    "grounding": "acc@0.25",
    "qa": "qa_accuracy",
    "physics": "E_rel_error",
}

__all__ = [
    "TASKS",
    "HEADLINE",
    "DepthTask",
    "PoseTask",
    "ReconTask",
    "NVSTask",
    "GroundingTask",
    "QATask",
    "PhysicsTask",
]
