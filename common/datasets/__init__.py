"""Datasets: the `Sample` type, the project's on-disk scene format, readers for public layouts
and a weighted mixture sampler. The format is documented in common/datasets/README.md."""

from common.datasets.sample import Sample, valid_from_depth
from common.datasets.scene_format import SceneDataset, read_index, read_scene, scene_mesh_path, write_index, write_scene
from common.errors import DatasetError

# Readers for public layouts and the mixture sampler (each module documents its layout).
from common.datasets.camera_files import KnownCameras, find_cameras, read_cameras
from common.datasets.endonerf import EndoNeRFClip, EndoNeRFDataset, endonerf_split, read_endonerf
from common.datasets.folder import read_image_folder
from common.datasets.io import read_intrinsics_txt, read_matrix_txt
from common.datasets.kitti import KittiDepthDataset, KittiFrame, kitti_eval_mask, read_kitti_frame
from common.datasets.mixture import MixtureDataset
from common.datasets.nyu import (
    NYUv2Folder,
    NYUv2Labeled,
    nyu_eigen_crop_mask,
    nyu_intrinsics,
    read_nyu_split,
)
from common.datasets.scannet import (
    ScanNetDataset,
    attach_annotations,
    read_multi3drefer,
    read_scannet_axis_alignment,
    read_scannet_scene,
    read_scanqa,
    read_scanrefer,
    read_sqa3d,
)
from common.datasets.seven_scenes import (
    SevenScenesDataset,
    read_seven_scenes_sequence,
    read_seven_scenes_split,
)

__all__ = [
    "DatasetError",
    "Sample",
    "SceneDataset",
    "read_index",
    "read_scene",
    "scene_mesh_path",
    "valid_from_depth",
    "write_index",
    "write_scene",
    # readers and mixture
    "EndoNeRFClip",
    "KnownCameras",
    "EndoNeRFDataset",
    "KittiDepthDataset",
    "KittiFrame",
    "MixtureDataset",
    "NYUv2Folder",
    "NYUv2Labeled",
    "ScanNetDataset",
    "SevenScenesDataset",
    "attach_annotations",
    "endonerf_split",
    "find_cameras",
    "kitti_eval_mask",
    "nyu_eigen_crop_mask",
    "nyu_intrinsics",
    "read_cameras",
    "read_endonerf",
    "read_image_folder",
    "read_intrinsics_txt",
    "read_kitti_frame",
    "read_matrix_txt",
    "read_multi3drefer",
    "read_nyu_split",
    "read_scannet_axis_alignment",
    "read_scannet_scene",
    "read_scanqa",
    "read_scanrefer",
    "read_seven_scenes_sequence",
    "read_seven_scenes_split",
    "read_sqa3d",
]
