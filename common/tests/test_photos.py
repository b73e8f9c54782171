"""The photo loader (common.datasets.folder) on files made here: EXIF rotation, mixed orientations,
large images, and the cameras it finds (COLMAP text and binary, LLFF, a cameras JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.cameras import look_at, make_K, map_pixels, write_colmap_text, write_llff_poses_bounds
from common.datasets import read_image_folder
from common.datasets.folder import _decode, _plan, source_K
from common.errors import DatasetError


def quadrants(h: int, w: int) -> np.ndarray:
    """[h, w, 3] uint8: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = (255, 255, 255)
    return a


def save(path, array, orientation: int | None = None, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if orientation is None:
        image.save(path, quality=quality)
        return
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, quality=quality, exif=exif.tobytes())


def colour_at(image: torch.Tensor, row: int, col: int) -> list:
    return (image[:, row, col] * 255).round().int().tolist()


def near(rgb, expected, tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, expected))


def two_cameras(n: int = 2):
    K = make_K(torch.tensor([50.0, 52.0]), torch.tensor([50.0, 52.0]), torch.tensor([15.0, 16.0]),
               torch.tensor([20.0, 19.0])).double()[:n]
    w2c = torch.stack([torch.eye(4), look_at(torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, 3]),
                                             torch.tensor([0.0, -1, 0]))]).double()[:n]
    return K, w2c


def test_exif_rotated_jpeg_is_shown_upright(tmp_path):
    upright = quadrants(40, 30)  # portrait
    # Orientation 6 ("rotate 90 CW to display"): the file stores the image turned 90 degrees counter-clockwise.
    save(tmp_path / "a_rotated.jpg", np.ascontiguousarray(np.rot90(upright, 1)), orientation=6)
    save(tmp_path / "b_upright.jpg", upright)
    s = read_image_folder(tmp_path)
    assert s.images.shape == (2, 3, 40, 30)  # both portrait: one size, nothing padded
    for v in range(2):
        assert near(colour_at(s.images[v], 5, 5), (255, 0, 0)) and near(colour_at(s.images[v], 5, 25), (0, 255, 0))
        assert near(colour_at(s.images[v], 35, 5), (0, 0, 255))
    assert s.annotations["content"] == [[0, 0, 40, 30]] * 2
    assert "EXIF orientation applied to 1" in s.annotations["note"]


def test_portrait_and_landscape_are_fitted_and_padded(tmp_path):
    for i in range(3):
        save(tmp_path / f"p{i}.png", quadrants(40, 30))
    save(tmp_path / "q.png", quadrants(30, 40))  # landscape
    s = read_image_folder(tmp_path)  # the most common size: 40x30
    assert s.images.shape == (4, 3, 40, 30)
    # q: s = min(40/30, 30/40) = 0.75 -> 22x30 (round(22.5) = 22), centred: 9 rows of black above
    assert s.annotations["content"][3] == [9, 0, 22, 30]
    q = s.images[3]
    assert q[:, :9].abs().max() == 0 and q[:, 31:].abs().max() == 0  # the padding is black
    assert near(colour_at(q, 12, 5), (255, 0, 0)) and near(colour_at(q, 28, 25), (255, 255, 255))
    # K: scaled by 30/40 across and 22/30 down (exactly the resize), shifted down by 9; the corners
    # of the full-size image land on the corners of the real pixels
    K0 = s.annotations["source_K"][3].double()
    sx, sy = 30 / 40, 22 / 30
    assert torch.allclose(s.K[3].double(), make_K(sx * K0[0, 0], sy * K0[1, 1], sx * K0[0, 2],
                                                  sy * K0[1, 2] + 9).double(), atol=1e-5)
    uv = map_pixels(torch.tensor([[0.0, 0.0], [40.0, 30.0]]).double(), K0, s.K[3].double())
    assert torch.allclose(uv, torch.tensor([[0.0, 9.0], [30.0, 31.0]]).double(), atol=1e-4)
    assert "1 resized, 1 padded" in s.annotations["note"]
    # Given a size, every image is fitted to it; K maps back to the full-size camera.
    t = read_image_folder(tmp_path, size=(32, 32))
    assert t.annotations["content"][0] == [0, 4, 32, 24] and t.annotations["content"][3] == [4, 0, 24, 32]
    back = source_K(t.K[3], t.annotations["content"][3], t.annotations["source_size"][3])
    assert torch.allclose(back, t.annotations["source_K"][3], atol=1e-4)


def test_large_images_are_decoded_small(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    save(tmp_path / "big.jpg", big, quality=70)
    save(tmp_path / "big.png", big[:, :, ::-1].copy())
    s = read_image_folder(tmp_path, max_side=200)
    assert s.images.shape == (2, 3, 150, 200)
    f = 1000 / np.tan(np.radians(30)) * 0.1  # the 60-degree K at 2000 px, scaled to 200 px
    assert torch.allclose(s.K[0], make_K(f, f, 100.0, 75.0).float(), rtol=1e-5)
    plan = _plan(tmp_path / "big.jpg", None, None, None)
    image, factor = _decode(plan, 10)
    assert factor == 8 and image.size == (250, 188)  # JPEG draft mode: 1/8, never read at full size


def test_colmap_text_beside_the_images_names_and_sizes(tmp_path):
    images = tmp_path / "photos"
    for i in range(2):
        save(images / f"img_{i}.jpg", quadrants(40, 30))
    K, w2c = two_cameras()
    write_colmap_text(images, ["img_0.jpg", "img_1.jpg"], K, w2c, 40, 30)
    s = read_image_folder(images)
    assert s.annotations["poses_known"] and s.annotations["intrinsics_source"] == "colmap"
    assert torch.allclose(s.K, K.float()) and torch.allclose(s.w2c, w2c.float(), atol=1e-6)
    assert "cameras from COLMAP text model" in s.annotations["note"]
    # A model written for .png names still fits the .jpg photos (matched by stem); at half the size
    # its K is scaled to the photos.
    write_colmap_text(images, ["img_0.png", "img_1.png"], K / torch.tensor([2.0, 2, 1])[:, None], w2c, 20, 15)
    s = read_image_folder(images)
    assert torch.allclose(s.K, K.float(), atol=1e-5)
    # --K replaces the model's K; its poses stay.
    s = read_image_folder(images, K=make_K(30.0, 30.0, 15.0, 20.0))
    assert s.K[0, 0, 0] == 30.0 and s.annotations["poses_known"] and "K from --K" in s.annotations["note"]
    write_colmap_text(images, ["img_0.jpg", "img_1.jpg"], K, w2c, 40, 50)
    with pytest.raises(DatasetError, match=r"img_0\.jpg: .*size \(H, W\) = \(40, 50\), the image is \(40, 30\)"):
        read_image_folder(images)


def test_colmap_binary_in_a_project_layout(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    for i in range(2):
        save(tmp_path / "images" / f"{i}.jpg", quadrants(40, 30))
    K, w2c = two_cameras()
    write_colmap_text(tmp_path / "text", ["0.jpg", "1.jpg"], K, w2c, 40, 30)
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    pycolmap.Reconstruction(str(tmp_path / "text")).write_binary(str(tmp_path / "sparse" / "0"))
    s = read_image_folder(tmp_path / "images")
    assert torch.allclose(s.K, K.float()) and torch.allclose(s.w2c, w2c.float(), atol=1e-6)
    assert f"COLMAP binary model {tmp_path / 'sparse' / '0'}" in s.annotations["note"]


def test_colmap_sizes_of_the_stored_pixels_keep_exif_off(tmp_path):
    upright = quadrants(40, 30)
    save(tmp_path / "a.jpg", np.ascontiguousarray(np.rot90(upright, 1)), orientation=6)  # stored 30x40
    K, w2c = two_cameras(1)
    write_colmap_text(tmp_path, ["a.jpg"], K, w2c, 30, 40)  # COLMAP reads the stored pixels
    s = read_image_folder(tmp_path)
    assert s.images.shape == (1, 3, 30, 40) and "EXIF orientation not applied to 1" in s.annotations["note"]


def test_llff_poses_bounds_above_the_images(tmp_path):
    for name in ("b.png", "a.png"):
        save(tmp_path / "images" / name, quadrants(40, 30))
    K = make_K(100.0, 100.0, 30.0, 40.0).double().expand(2, 3, 3)  # at 80x60, twice the photos' size
    _, w2c = two_cameras()
    write_llff_poses_bounds(tmp_path / "poses_bounds.npy", K, w2c, 80, 60, torch.tensor([[0.5, 9.0]] * 2))
    s = read_image_folder(tmp_path / "images")
    assert s.view_names == ["a", "b"] and torch.allclose(s.w2c, w2c.float(), atol=1e-5)
    assert torch.allclose(s.K[0], (K[0] / torch.tensor([2.0, 2, 1]).double()[:, None]).float())  # 80x60 -> 40x30
    assert "cameras from LLFF" in s.annotations["note"]
    save(tmp_path / "images" / "c.png", quadrants(40, 30))
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy: 2 cameras for 3 images"):
        read_image_folder(tmp_path / "images")


def test_cameras_json(tmp_path):
    for name in ("x.jpg", "y.jpg", "z.jpg"):
        save(tmp_path / name, quadrants(40, 30))
    K, w2c = two_cameras()
    views = [{"name": n, "K": K[i].tolist(), "w2c": w2c[i].tolist()} for i, n in enumerate(("x.jpg", "y.jpg"))]
    views[1]["K"] = [52.0, 52.0, 16.0, 19.0]
    (tmp_path / "cameras.json").write_text(json.dumps({"width": 30, "height": 40, "views": views}))
    with pytest.warns(UserWarning, match=r"1 images not in it left out: \['z.jpg'\]"):
        s = read_image_folder(tmp_path)
    assert s.view_names == ["x", "y"] and torch.allclose(s.K, K.float()) and torch.allclose(s.w2c, w2c.float())
    assert s.annotations["unregistered"] == ["z.jpg"] and "cameras JSON" in s.annotations["note"]
    views[0]["K"] = [[0, 0, 1], [0, 1, 0], [0, 0, 1]]
    (tmp_path / "cameras.json").write_text(json.dumps({"views": views}))
    with pytest.raises(DatasetError, match=r"cameras\.json: views\[0\]\.K: expected focal lengths fx, fy > 0"):
        read_image_folder(tmp_path)
    # An explicit cameras file (the demos' --cameras) wins over what lies beside the images.
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"views": [{"name": n, "K": [40, 40, 15, 20]} for n in ("x.jpg", "y.jpg", "z.jpg")]}))
    s = read_image_folder(tmp_path, cameras=other)
    assert s.num_views == 3 and not s.annotations["poses_known"] and s.K[2, 0, 0] == 40.0


def test_no_cameras_and_fov(tmp_path):
    save(tmp_path / "one.png", quadrants(40, 30))
    s = read_image_folder(tmp_path / "one.png")  # one file
    assert s.num_views == 1 and "no cameras found: assuming a 60 degree horizontal field of view" in s.annotations["note"]
    s = read_image_folder([tmp_path / "one.png"], fov=90.0)
    assert torch.allclose(s.K[0, 0, 0], torch.tensor(15.0)) and s.annotations["intrinsics_source"] == "--fov 90 deg"
    with pytest.raises(DatasetError, match=r"nothing\.png: file not found"):
        read_image_folder([tmp_path / "nothing.png"])
