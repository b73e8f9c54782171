"""Datasets: the `Sample` type, the project's on-disk scene format, readers for public layouts
and a weighted mixture sampler. The format is documented in common/datasets/README.md."""

from common.datasets.sample import Sample, valid_from_depth
from common.datasets.scene_format import SceneDataset, read_index, read_scene, scene_mesh_path, write_index, write_scene
from common.errors import DatasetError

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
]
