"""Model: feature retrieval at the right pixels, save/load, config errors, demo, bad input."""

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from common.cameras import look_at, make_K, project, transform_points, write_colmap_text
from common.datasets import read_image_folder
from common.metrics import point_cloud_metrics
from common.pictures import read_depth
from common.errors import DatasetError
from ivgt.config import ModelConfig, load_config
from ivgt.demo import run_demo
from ivgt.mesh import bounds_from_points, extract_coarse_to_fine, extract_dense
from ivgt.model import IVGT, cameras_from_encoding, pose_encoding, sample_views
from ivgt.scene import Scene

TINY = dict(image_size=(32, 32), patch_size=8, encoder_dim=32, encoder_layers=1, encoder_heads=2, dim=32, depth=1,
            heads=2, feature_dim=8, decoder_hidden=16, n_coarse=8, n_fine=8, up_sample_steps=1)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return IVGT.from_model_config(ModelConfig(**TINY)).eval()


def test_query_features_come_from_the_projected_pixel():
    H, W = 24, 32
    K = make_K(torch.tensor([28.0, 25.0]), torch.tensor([30.0, 26.0]), torch.tensor([16.5, 15.0]), torch.tensor([12.0, 11.5]))
    w2c = torch.stack([torch.eye(4), look_at(torch.tensor([1.0, 0.2, -0.5]), torch.tensor([0.0, 0.0, 2.0]), torch.tensor([0.0, -1.0, 0.0]))])
    # maps whose channels are the pixel-centre coordinates (u + 0.5, v + 0.5): bilinear sampling
    # reproduces any in-range coordinate exactly.
    u = torch.arange(W) + 0.5
    v = torch.arange(H) + 0.5
    maps = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1])[None].expand(2, -1, -1, -1).contiguous()  # [2, 2, H, W]
    points = torch.tensor([[0.1, -0.2, 2.0], [-0.3, 0.25, 1.5], [0.2, 0.1, 2.5]])
    samples, z, inside = sample_views(points, K, w2c, maps, H, W)
    expected = project(transform_points(w2c[:, None], points[None].expand(2, -1, -1))[0] if False else
                       torch.stack([transform_points(w2c[i], points) for i in range(2)]), K)  # [2, N, 2]
    assert inside.all()
    assert torch.allclose(samples, expected, atol=1e-4)
    assert torch.allclose(z, torch.stack([transform_points(w2c[i], points)[:, 2] for i in range(2)]))


def test_pose_encoding_round_trip():
    K = make_K(40.0, 38.0, 16.0, 12.0)
    w2c = look_at(torch.tensor([1.0, 0.5, -1.0]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    K2, w2c2 = cameras_from_encoding(pose_encoding(w2c, K, 24, 32), 24, 32)
    assert torch.allclose(w2c2, w2c, atol=1e-5) and torch.allclose(K2, K, atol=1e-4)


def test_forward_shapes_first_camera_identity_and_save_load(tiny_model, tmp_path):
    x = torch.rand(1, 3, 3, 32, 32)
    out = tiny_model(x)
    assert out["depth"].shape == (1, 3, 8, 8) and out["features"].shape == (1, 3, 8, 8, 8)
    assert torch.allclose(out["w2c"][0, 0], torch.eye(4), atol=1e-6)
    tiny_model.save_pretrained(tmp_path)
    loaded = IVGT.load(tmp_path)
    assert torch.allclose(loaded(x)["depth"], out["depth"])
    # a checkpoint of another architecture: clear errors
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="UNet2DModel"):
        IVGT.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "feature_dim": 16}))
    with pytest.raises(ValueError, match="do not match"):
        IVGT.load(tmp_path)


@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_weights_load_from_a_local_folder(tmp_path, registers):
    """facebook/dinov2-* layout; with encoder_registers, facebook/dinov2-with-registers-* (paper.yaml)."""
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, patch_size=8,
                 image_size=32, layerscale_value=1.0)
    enc = (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**sizes, num_register_tokens=registers)) if registers
           else Dinov2Model(Dinov2Config(**sizes)))
    enc.save_pretrained(tmp_path / "dino")
    model = IVGT.from_model_config(ModelConfig(**{**TINY, "encoder_registers": registers,
                                                  "dinov2_path": str(tmp_path / "dino")}))
    for k, v in enc.state_dict().items():
        assert torch.equal(model.aggregator.encoder.state_dict()[k], v)


def test_paper_config_builds_on_meta():
    cfg = load_config("ivgt/configs/paper.yaml")
    with torch.device("meta"):
        model = IVGT.from_model_config(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    print(f"paper.yaml parameters: {n / 1e6:.1f} M")
    assert 0.6e9 < n < 2e9


def test_config_typo_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  featur_dim: 3\n")
    with pytest.raises(ValueError, match="featur_dim"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="stepz"):
        load_config(None, ["stepz=3"])


def _write(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("sizes", [[(250, 333), (250, 333)], [(250, 333)]])
def test_demo_odd_size_and_one_image(tmp_path, tiny_model, sizes):
    _write(tmp_path / "imgs", sizes)
    info = run_demo(tmp_path / "imgs", tmp_path / "out", tiny_model, mesh_resolution=16)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"imgs_mesh.ply", "imgs_mesh.glb", "cameras.json", "cameras.txt", "images.txt", "points3D.txt",
            "0_depth.png", "0_depth.json", "0_depth_preview.png", "0_normal.png", "imgs_contact_sheet.png"} <= files
    depth, meta = read_depth(tmp_path / "out" / "0_depth.png")  # 16-bit, value / scale in model units
    assert depth.shape == (250, 333) and meta["unit"] == "units"  # the photo's size, not the model's
    preview = Image.open(tmp_path / "out" / "0_depth_preview.png")
    assert preview.height == 250 and preview.width > 333  # with its colour bar
    assert Image.open(tmp_path / "out" / "0_normal.png").size == (333, 250)
    mesh = trimesh.load(tmp_path / "out" / "imgs_mesh.ply", force="mesh")
    assert len(mesh.vertices) == info["mesh"]["vertices"]
    if len(mesh.faces):  # an untrained model's field may have no surface
        assert mesh.faces.max() < len(mesh.vertices) and mesh.visual.kind == "vertex"
    assert len(info["views"]) == len(sizes)


def test_demo_photos_of_mixed_orientation_read_back_with_their_cameras(tmp_path, tiny_model):
    """Portrait and landscape JPEGs, one stored turned with an EXIF tag: the demo names its outputs
    after them, and the photos read back with the COLMAP model and cameras.json it writes."""
    rng = np.random.default_rng(0)
    photos = tmp_path / "tower"
    photos.mkdir()
    for name, (h, w) in (("nle_1", (40, 30)), ("nle_2", (40, 30)), ("nle_3", (30, 40))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / f"{name}.jpg")
    turned = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))  # shown as 40x30
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(photos / "nle_4.jpg", exif=exif.tobytes())
    info = run_demo(photos, tmp_path / "out", tiny_model, mesh_resolution=16)
    assert [v["name"] for v in info["views"]] == ["nle_1.jpg", "nle_2.jpg", "nle_3.jpg", "nle_4.jpg"]
    assert [(v["height"], v["width"]) for v in info["views"]] == [(40, 30), (40, 30), (30, 40), (40, 30)]
    assert {f"nle_{i}_depth.png" for i in range(1, 5)} <= {p.name for p in (tmp_path / "out").iterdir()}
    K = torch.tensor([v["K"] for v in info["views"]])
    for cameras in (tmp_path / "out", tmp_path / "out" / "cameras.json"):
        s = read_image_folder(photos, cameras=cameras)
        assert s.num_views == 4 and torch.allclose(s.annotations["source_K"], K, atol=1e-4)
    # Known cameras are used: the written cameras are the given ones, in their units.
    write_colmap_text(photos, [v["name"] for v in info["views"]], K.double(),
                      torch.stack([torch.eye(4), *[look_at(torch.tensor([0.3 * i, 0, 0]), torch.tensor([0.0, 0, 4]),
                                                           torch.tensor([0.0, -1, 0])) for i in (1, 2, 3)]]).double(),
                      [v["height"] for v in info["views"]], [v["width"] for v in info["views"]])
    known = run_demo(photos, tmp_path / "out2", tiny_model, mesh_resolution=16)
    assert known["units"] == "metres"
    assert torch.allclose(torch.tensor(known["views"][2]["w2c"]), look_at(torch.tensor([0.6, 0, 0]), torch.tensor(
        [0.0, 0, 4]), torch.tensor([0.0, -1, 0])), atol=1e-5)
    assert torch.allclose(torch.tensor([v["K"] for v in known["views"]]), K, atol=1e-4)


def test_demo_bad_input(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        run_demo(tmp_path / "empty", tmp_path / "o1", tiny_model)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("not an image")
    with pytest.raises(DatasetError, match="x.png"):
        run_demo(tmp_path / "bad", tmp_path / "o3", tiny_model)
    with pytest.raises(ValueError, match="render-views"):
        run_demo(tmp_path / "bad", tmp_path / "o4", tiny_model, render_views=-1)


def test_scene_chunked_queries_renders_and_mesh_match_the_one_chunk_and_dense_paths(tiny_model):
    """Chunk sizes (bounded by (view, point) pairs, so memory stays flat in the number of views) and
    coarse-to-fine meshing change the work, not the result."""
    torch.manual_seed(1)
    scene = tiny_model.reconstruct(torch.rand(3, 3, 32, 32))
    surface = scene.points()  # [M, 3] back-projected depth
    points = surface[torch.randint(len(surface), (500,))] + 0.05 * torch.randn(500, 3)  # [N, 3] near it
    whole = scene.sdf(points)  # one chunk
    scene.pairs, scene.chunk = 3 * 64, 64
    assert torch.allclose(scene.sdf(points), whole, atol=1e-6)
    small = scene.render(scene.K[1], scene.w2c[1], 8, 8)  # pairs // (V * samples): 1 ray per chunk floor 16
    one = scene.render(scene.K[1], scene.w2c[1], 8, 8, chunk=4096)
    for key in ("depth", "normals", "opacity", "rgb"):
        assert torch.allclose(small[key], one[key], atol=1e-5), key
    # Meshing the learned field (an untrained one: its level set at the median value, so that there
    # is a surface) coarse-to-fine, as extract_mesh does, against dense marching cubes.
    bounds = bounds_from_points(surface)
    level = scene.sdf(surface).median()
    field = lambda p: scene.sdf(p) - level  # noqa: E731
    v_dense, _, _ = extract_dense(field, bounds, 16)
    v_c2f, _, _ = extract_coarse_to_fine(field, bounds, 16, levels=2, band=4.0)
    assert len(v_dense) > 0
    voxel = float(((bounds[1] - bounds[0]) / 16).max())
    assert point_cloud_metrics(v_c2f, v_dense)["chamfer"] < 0.5 * voxel


def test_render_from_the_k_nearest_views(tiny_model):
    """views=k picks the k input cameras nearest the rendered one (centre distance plus the optical
    axes' angle times the median depth), only those views change its render, and k = V renders
    exactly what all views render."""
    torch.manual_seed(2)
    scene = tiny_model.reconstruct(torch.rand(5, 3, 32, 32))
    d = float(scene.depth.median())
    turned = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # 90 degrees about y
    w2c = torch.eye(4).repeat(5, 1, 1)  # [5, 4, 4]: centres at x = 0, 0.02d, 0 (turned), 0.2d, 0.06d
    w2c[2, :3, :3] = turned
    for v, x in ((1, 0.02), (3, 0.2), (4, 0.06)):
        w2c[v, 0, 3] = -x * d  # t = -R c with R = I
    scene.w2c, scene.K = w2c, make_K(28.0, 28.0, 16.0, 16.0).expand(5, 3, 3)  # 60 degrees: the views overlap
    assert scene.nearest_views(w2c[0], 3).tolist() == [0, 1, 4]  # view 2 shares view 0's centre, not its axis
    assert scene.nearest_views(w2c[0], 4).tolist() == [0, 1, 3, 4]
    between = w2c[0].clone()
    between[0, 3] = -0.05 * d
    assert scene.nearest_views(between, 2).tolist() == [1, 4]
    assert scene.nearest_views(between, 9).tolist() == [0, 1, 2, 3, 4]
    # k = V: the same views in the same order, the same numbers.
    every = scene.render(scene.K[1], w2c[1], 8, 8)
    for key, value in scene.render(scene.K[1], w2c[1], 8, 8, views=5).items():
        assert torch.equal(value, every[key]), key
    # Features of view 4 (seen from view 1 but not among its 2 nearest, 0 and 1) replaced: the
    # k = 2 render is unchanged, the all-views render is not.
    features = scene.features.clone()
    features[4] = torch.randn_like(features[4]) * 10
    other = Scene(tiny_model, scene.images, features, scene.depth, scene.K, w2c)
    near = scene.render(scene.K[1], w2c[1], 8, 8, views=2)
    other_near = other.render(scene.K[1], w2c[1], 8, 8, views=2)
    for key in near:
        assert torch.equal(near[key], other_near[key]), key
    no_rgb = scene.render(scene.K[1], w2c[1], 8, 8, views=2, rgb=False)  # the colour decoder not run
    assert set(no_rgb) == {"depth", "normals", "opacity"}
    assert all(torch.allclose(no_rgb[key], near[key], atol=1e-6) for key in no_rgb)
    assert not torch.allclose(other.render(scene.K[1], w2c[1], 8, 8)["rgb"], every["rgb"], atol=1e-4)
    with pytest.raises(ValueError, match="views"):
        scene.render(scene.K[1], w2c[1], 8, 8, views=-1)
