"""common.pictures: 16-bit depth with its scale, previews with a colour bar, normal maps, upsampling
between pinhole cameras, the contact sheet, and PLY/GLB files read back with trimesh."""

import json

import matplotlib
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from common import pictures as P
from common.cameras import make_K
from common.datasets.io import read_normals_png


def test_depth_png_round_trip_in_millimetres_with_the_scale_in_a_sidecar(tmp_path):
    depth = torch.tensor([[0.0, 0.5004], [2.25, 65.0]])  # [2, 2] metres, one invalid pixel
    meta = P.write_depth(tmp_path / "d.png", depth, K=torch.eye(3))
    assert meta["scale"] == 1000.0 and meta["unit"] == "m"
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["scale"] == 1000.0 and side["K"] == np.eye(3).tolist() and "value / scale" in side["meaning"]
    raw = np.asarray(Image.open(tmp_path / "d.png"))
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 500], [2250, 65000]]  # millimetres
    back, _ = P.read_depth(tmp_path / "d.png")
    np.testing.assert_allclose(back.numpy(), [[0.0, 0.5], [2.25, 65.0]], atol=1e-6)
    # an outdoor depth past 65.5 m drops to centimetres, said in the sidecar
    assert P.write_depth(tmp_path / "far.png", torch.tensor([[80.0]]))["scale"] == 100.0
    assert P.read_depth(tmp_path / "far.png")[0].item() == pytest.approx(80.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        P.write_depth(tmp_path / "bad.png", torch.tensor([[float("nan")]]))


def test_preview_colours_depth_by_the_colour_map_and_adds_a_colour_bar_in_metres():
    depth = torch.linspace(1.0, 3.0, 40).repeat(30, 1)  # [30, 40]
    depth[0, 0] = 0.0
    out = P.depth_preview(depth, vmin=1.0, vmax=3.0)
    assert out.shape[0] == 30 and out.shape[1] > 40 and out.dtype == np.uint8
    turbo = matplotlib.colormaps["turbo"]
    np.testing.assert_array_equal(out[5, 39], np.round(np.array(turbo(1.0)[:3]) * 255))  # far = 3 m
    np.testing.assert_array_equal(out[5, 0], np.round(np.array(turbo(0.0)[:3]) * 255))
    assert out[0, 0].tolist() == [0, 0, 0]  # invalid
    bar = P.colorbar(200, 1.0, 3.0)
    assert bar.shape[0] == 200 and (bar == 255).all(-1).mean() > 0.3  # labelled strip on white
    ramp = torch.arange(0.0, 101.0).reshape(1, -1)  # 0 (invalid), then 1 .. 100 m
    assert P.depth_range([ramp]) == pytest.approx((2.98, 98.02))  # 2nd and 98th percentiles of the valid


def test_normal_map_is_n_plus_one_over_two_in_the_camera_frame(tmp_path):
    n = torch.zeros(3, 2, 3)
    n[:, 0, 0] = torch.tensor([0.0, 0.0, -1.0])  # facing the camera
    n[:, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # facing right
    n[:, 0, 2] = torch.tensor([0.0, -1.0, 0.0])  # facing up (y is down)
    rgb = P.normals_to_rgb(n)
    assert rgb[0, :3].tolist() == [[128, 128, 0], [255, 128, 128], [128, 0, 128]]
    assert rgb[1].tolist() == [[0, 0, 0]] * 3  # unknown
    P.write_normals(tmp_path / "n.png", n)
    back = read_normals_png(tmp_path / "n.png")  # the project's reader decodes it
    np.testing.assert_allclose(back[:, 0].numpy(), n[:, 0].numpy(), atol=0.01)


def test_upsampling_follows_the_intrinsics_and_keeps_invalid_pixels_out():
    # a depth linear in the normalised image coordinate (u + 0.5 - cx) / fx: bilinear resampling
    # between the 12 x 16 camera and its 48 x 64 resize keeps it exact where the pixel centres map
    K = make_K(20.0, 20.0, 8.0, 6.0)
    u = torch.arange(16) + 0.5
    depth = (2.0 + 0.5 * (u - 8.0) / 20.0).repeat(12, 1)  # [12, 16]
    depth[:, :3] = 0.0  # invalid strip on the left
    up = P.upsample_depth(depth, K, (48, 64))  # K resized: fx 80, cx 32
    u2 = torch.arange(64) + 0.5
    expected = 2.0 + 0.5 * (u2 - 32.0) / 80.0
    inner = slice(14, 62)  # away from the invalid strip and the right edge
    np.testing.assert_allclose(up[20, inner].numpy(), expected[inner].numpy(), atol=1e-5)
    assert (up[:, :11] == 0).all()  # the invalid strip stays invalid ...
    assert (up[:, 12:] >= depth[0, 3] - 1e-6).all()  # ... and does not darken its valid neighbours
    n = torch.zeros(3, 12, 16)
    n[2] = -1.0
    nu = P.upsample_normals(n, K, (48, 64))
    assert nu.shape == (3, 48, 64)
    np.testing.assert_allclose(nu.norm(dim=0).numpy(), 1.0, atol=1e-5)


def test_contact_sheet_has_a_row_per_view_and_the_columns_given(tmp_path):
    views = [{"name": f"v{i}", "image": torch.rand(3, 30, 40), "depth": torch.rand(30, 40) + 1,
              "normals": torch.nn.functional.normalize(torch.randn(3, 15, 20), dim=0)} for i in range(3)]
    views[2].pop("normals")  # a view without normals leaves its cell blank
    sheet = P.write_contact_sheet(tmp_path / "sheet.png", views, title="run", thumb_height=60)
    assert Image.open(tmp_path / "sheet.png").size == (sheet.shape[1], sheet.shape[0])
    assert sheet.shape[0] > 3 * 60 and sheet.shape[1] > 3 * 80
    only_images = P.write_contact_sheet(tmp_path / "s2.png", [{"name": "a", "image": torch.rand(3, 30, 40)}],
                                        thumb_height=60)
    assert only_images.shape[1] < sheet.shape[1]
    with pytest.raises(ValueError, match="no views"):
        P.write_contact_sheet(tmp_path / "s3.png", [])


def test_mesh_and_point_cloud_files_read_back_with_trimesh(tmp_path):
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    box.apply_translation((0.0, -5.0, 0.0))  # 5 up in an OpenCV (y down) world
    colors = np.random.default_rng(0).random((len(box.vertices), 3))
    for suffix in ("ply", "glb"):
        P.write_mesh(tmp_path / f"m.{suffix}", box.vertices, box.faces, colors)
        mesh = trimesh.load(tmp_path / f"m.{suffix}", force="mesh")
        assert len(mesh.vertices) == 8 and len(mesh.faces) == 12
        assert mesh.faces.max() < len(mesh.vertices) and mesh.is_watertight
        assert mesh.visual.kind == "vertex"
        np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], np.round(colors * 255))
        assert mesh.volume == pytest.approx(6.0)
        # PLY keeps the coordinates; GLB turns the world's up (-y) to glTF's +y
        assert mesh.centroid[1] == pytest.approx(-5.0 if suffix == "ply" else 5.0)

        points = np.random.default_rng(1).random((100, 3))
        P.write_point_cloud(tmp_path / f"p.{suffix}", points, (points * 255).astype(np.uint8))
        cloud = trimesh.load(tmp_path / f"p.{suffix}")
        if isinstance(cloud, trimesh.Scene):
            (cloud,) = cloud.geometry.values()
        assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == 100
        np.testing.assert_array_equal(cloud.colors[:, :3], (points * 255).astype(np.uint8))
    z_up = P.write_mesh(tmp_path / "z.glb", box.vertices + [0, 5, 9], box.faces, up=(0, 0, 1))
    for suffix in ("ply", "glb"):  # marching cubes may find no surface: an empty mesh, colours or not
        P.write_mesh(tmp_path / f"empty.{suffix}", np.zeros((0, 3)), np.zeros((0, 3), int), np.zeros((0, 4), np.uint8))
    assert trimesh.load(tmp_path / "z.glb", force="mesh").centroid[1] == pytest.approx(z_up.centroid[2])


def test_up_from_cameras_is_the_axis_upright_cameras_agree_on():
    from common.cameras import look_at

    assert P.up_from_cameras(torch.eye(4)[None]) == (0.0, -1.0, 0.0)  # world = an OpenCV camera's frame
    eyes = torch.tensor([[3.0, 0, 1.5], [0, 3.0, 1.0], [-3.0, 0.5, 2.0]], dtype=torch.float64)
    w2c = look_at(eyes, torch.zeros(3, 3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64))
    assert P.up_from_cameras(w2c) == (0.0, 0.0, 1.0)  # orbiting a z-up scene, looking down a little


def test_bad_geometry_is_one_error_naming_the_file(tmp_path):
    v = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"m\.ply: faces expected \[F, 3\] indices in \[0, 3\)"):
        P.write_mesh(tmp_path / "m.ply", v, [[0, 1, 3]])
    with pytest.raises(ValueError, match="p.ply: points contain 1 non-finite rows"):
        P.write_point_cloud(tmp_path / "p.ply", [[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="expected a .ply or .glb"):
        P.write_point_cloud(tmp_path / "p.obj", v)
    with pytest.raises(ValueError, match=r"colors expected \[3, 3\]"):
        P.write_point_cloud(tmp_path / "p.ply", v, np.zeros((2, 3)))
