"""The project's on-disk scene format: round trip, index, and one DatasetError per bad input."""

import json

import pytest
import torch

from common.datasets import (
    DatasetError,
    Sample,
    SceneDataset,
    read_index,
    read_scene,
    write_index,
    write_scene,
)
from common.tests import datasets_fixtures as fx

V, H, W = 2, 6, 8


def _sample() -> Sample:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (V, 3, H, W), generator=g).float() / 255.0  # exact in 8 bits
    depth = torch.randint(1, 5000, (V, H, W), generator=g).float() / 1000.0  # exact in millimetres
    depth[0, 0, 0] = 0.0
    normals = torch.zeros(V, 3, H, W)
    normals[:, 2] = -1.0  # facing the camera
    normals[1, :, 0, 0] = 0.0  # unknown
    K = torch.tensor([[10.0, 0, 4.0], [0, 11.0, 3.0], [0, 0, 1]]).expand(V, 3, 3).clone()
    w2c = torch.eye(4).expand(V, 4, 4).clone()
    w2c[1, :3, 3] = torch.tensor([0.5, -1.0, 2.0])
    return Sample(
        images=images, K=K, w2c=w2c, depth=depth, valid=depth > 0, normals=normals,
        instances=torch.randint(0, 4, (V, H, W), generator=g),
        masks={"tool": torch.rand(V, H, W, generator=g) > 0.5},
        times=torch.tensor([0.0, 0.5]), scene_id="s0", view_names=["a", "b"],
        annotations={"objects": [{"id": 1, "category": "box"}], "questions": []},
    )


@pytest.fixture
def scene(tmp_path):
    return write_scene(tmp_path / "split" / "s0", _sample())


def test_round_trip(scene):
    ref, got = _sample(), read_scene(scene)
    assert torch.equal(got.images, ref.images)
    assert torch.allclose(got.depth, ref.depth, atol=1e-6)
    assert torch.equal(got.valid, ref.depth > 0)
    assert torch.allclose(got.normals, ref.normals, atol=1e-2)
    assert torch.equal(got.instances, ref.instances)
    assert torch.equal(got.masks["tool"], ref.masks["tool"])
    assert torch.equal(got.K, ref.K) and torch.equal(got.w2c, ref.w2c) and torch.equal(got.times, ref.times)
    assert got.view_names == ["a", "b"] and got.scene_id == "s0" and got.annotations == ref.annotations
    one = read_scene(scene, views=[1], load=())
    assert one.num_views == 1 and one.depth is None and one.view_names == ["b"]


def test_index_and_dataset(scene):
    write_index(scene.parent, ["s0"], {"name": "test"})
    assert read_index(scene.parent)["scenes"] == ["s0"]
    ds = SceneDataset(scene.parent.parent, split="split")
    assert len(ds) == 1 and ds[0].num_views == V


def _edit_meta(scene, fn):
    meta = json.loads((scene / "scene.json").read_text())
    fn(meta)
    (scene / "scene.json").write_text(json.dumps(meta))


def test_missing_scene_json(tmp_path):
    with pytest.raises(DatasetError, match="scene.json"):
        read_scene(tmp_path)


def test_wrong_format_version(scene):
    _edit_meta(scene, lambda m: m.update(format_version=99))
    with pytest.raises(DatasetError, match=r"scene\.json.*format_version"):
        read_scene(scene)


def test_corrupt_png(scene):
    fx.corrupt(scene / "rgb" / "b.png")
    with pytest.raises(DatasetError, match=r"rgb[/\\]b\.png"):
        read_scene(scene)


def test_depth_of_wrong_size(scene):
    fx.u16(scene / "depth" / "a.png", torch.ones(H + 1, W).numpy())
    with pytest.raises(DatasetError, match=r"depth[/\\]a\.png.*size"):
        read_scene(scene)


def test_non_finite_K(scene):
    _edit_meta(scene, lambda m: m["views"][0]["K"][0].__setitem__(0, float("nan")))
    with pytest.raises(DatasetError, match=r"scene\.json views\[0\].*'K'"):
        read_scene(scene)


def test_view_index_out_of_range(scene):
    with pytest.raises(DatasetError, match=r"scene\.json.*view index 5 out of range"):
        read_scene(scene, views=[5])


def test_index_lists_missing_scene(tmp_path):
    write_index(tmp_path, ["nope"])
    with pytest.raises(DatasetError, match="nope"):
        read_index(tmp_path)
