"""Every metric of the monorepo, once: each paper's `evaluate.py` and `benchmarks/` import from here.

Inputs are torch tensors or numpy arrays; aggregate metrics come back as Python floats (or dicts
of floats), per-item values as numpy arrays. Each function's docstring gives its formula and the
protocol (paper / codebase) it follows. Bad shapes or non-finite inputs raise ValueError naming
the argument.
"""

from .captions import bleu, cider, rouge_l
from .correspondence import end_point_error, epe_stats, pck
from .depth import align_lstsq, align_median, depth_metrics, silog
from .geometry import (
    align_sim3_icp,
    estimate_normals,
    icp,
    mesh_metrics,
    multiview_reconstruction_metrics,
    occupancy_iou,
    nearest_neighbor_distances,
    normal_angle_metrics,
    point_cloud_metrics,
    sample_mesh_surface,
)
from .grounding import acc_at_iou, box_corners, box_iou_3d_axis_aligned, box_iou_3d_oriented, multi3drefer_f1
from .image import psnr, psnr_masked_image, ssim, ssim_3dgs, ssim_map
from .language import (
    MRA_THRESHOLDS,
    accuracy,
    exact_match,
    mean_relative_accuracy,
    normalize_answer,
    parse_number,
    parse_number_depthlm,
    parse_number_vsibench,
    refined_exact_match,
)
from .pose import (
    absolute_trajectory_error,
    pose_auc,
    pose_metrics,
    relative_pose_error,
    relative_pose_errors,
    rotation_error_deg,
    rra,
    rta,
    translation_direction_error_deg,
    umeyama,
)
from .statistics import bootstrap_ci, paired_bootstrap_test

__all__ = [
    "bleu",
    "cider",
    "rouge_l",
    # depth
    "depth_metrics",
    "align_median",
    "align_lstsq",
    "silog",
    # geometry
    "point_cloud_metrics",
    "mesh_metrics",
    "normal_angle_metrics",
    "nearest_neighbor_distances",
    "sample_mesh_surface",
    "estimate_normals",
    "icp",
    "multiview_reconstruction_metrics",
    "align_sim3_icp",
    "occupancy_iou",
    # pose
    "rotation_error_deg",
    "translation_direction_error_deg",
    "relative_pose_errors",
    "rra",
    "rta",
    "pose_auc",
    "umeyama",
    "absolute_trajectory_error",
    "relative_pose_error",
    "pose_metrics",
    # image
    "psnr",
    "psnr_masked_image",
    "ssim",
    "ssim_3dgs",
    "ssim_map",
    # language
    "normalize_answer",
    "exact_match",
    "refined_exact_match",
    "parse_number",
    "parse_number_depthlm",
    "parse_number_vsibench",
    "MRA_THRESHOLDS",
    "mean_relative_accuracy",
    "accuracy",
    # grounding
    "box_corners",
    "box_iou_3d_axis_aligned",
    "box_iou_3d_oriented",
    "acc_at_iou",
    "multi3drefer_f1",
    # correspondence
    "end_point_error",
    "epe_stats",
    "pck",
    # statistics
    "bootstrap_ci",
    "paired_bootstrap_test",
]
