"""Readers for 7-Scenes, KITTI, NYU v2, EndoNeRF and image folders, on tiny fixtures in their layouts."""

import math
import pickle

import h5py
import numpy as np
import pytest
import torch

from common.cameras import write_colmap_text
from common.datasets import DatasetError
from common.datasets.endonerf import EndoNeRFDataset, endonerf_split, read_endonerf
from common.datasets.folder import read_image_folder
from common.datasets.kitti import KittiDepthDataset, kitti_eval_mask
from common.datasets.nyu import NYUv2Folder, NYUv2Labeled, nyu_eigen_crop_mask, nyu_intrinsics, read_nyu_split
from common.datasets.seven_scenes import (
    SevenScenesDataset,
    read_seven_scenes_sequence,
    read_seven_scenes_split,
)
from common.tests import datasets_fixtures as fx

H, W = 6, 8


def _identity_w2c(c2w):
    return torch.from_numpy(np.linalg.inv(c2w)).float()


# ---- 7-Scenes -----------------------------------------------------------------------------------


def make_seven_scenes(root):
    scene = root / "chess"
    for seq, n in (("seq-01", 3), ("seq-02", 2)):
        for i in range(n):
            stem = scene / seq / f"frame-{i:06d}"
            fx.rgb(f"{stem}.color.png", H, W, seed=i)
            depth = np.full((H, W), 2000)
            depth[0, 0], depth[1, 1] = 65535, 1500
            fx.u16(f"{stem}.depth.png", depth)
            fx.matrix_txt(f"{stem}.pose.txt", fx.c2w_example(i))
    (scene / "TrainSplit.txt").write_text("sequence1\n")
    (scene / "TestSplit.txt").write_text("sequence2\n")
    return scene


def test_seven_scenes(tmp_path):
    scene = make_seven_scenes(tmp_path)
    s = read_seven_scenes_sequence(scene / "seq-01")
    assert s.num_views == 3 and s.scene_id == "chess/seq-01" and s.view_names[0] == "frame-000000"
    assert s.depth[0, 0, 0] == 0 and not s.valid[0, 0, 0]  # 65535 = invalid
    assert s.depth[0, 1, 1] == pytest.approx(1.5) and s.depth[0, 2, 2] == pytest.approx(2.0)
    assert torch.allclose(s.w2c[1], _identity_w2c(fx.c2w_example(1)), atol=1e-6)
    # 585 / 320 / 240 at 640x480, scaled to the 8x6 fixture
    assert torch.allclose(s.K[0], torch.tensor([[585 / 80, 0, 4.0], [0, 585 / 80, 3.0], [0, 0, 1]]))
    assert "not registered" in s.annotations["registration"]
    assert read_seven_scenes_split(scene, "test") == ["seq-02"]
    ds = SevenScenesDataset(scene, "train", num_views=2)
    assert len(ds) == 1 and ds[0].view_names == ["frame-000000", "frame-000001"]


def test_seven_scenes_bad_input(tmp_path):
    scene = make_seven_scenes(tmp_path)
    pose = fx.c2w_example(0)
    pose[0, 0] = np.nan
    fx.matrix_txt(scene / "seq-01" / "frame-000001.pose.txt", pose)
    with pytest.raises(DatasetError, match=r"frame-000001\.pose\.txt.*non-finite"):
        read_seven_scenes_sequence(scene / "seq-01")
    (scene / "TrainSplit.txt").write_text("sequence1\nseq two\n")
    with pytest.raises(DatasetError, match=r"TrainSplit\.txt: line 2"):
        read_seven_scenes_split(scene, "train")
    fx.u16(scene / "seq-02" / "frame-000001.depth.png", np.zeros((H, W + 1)))
    with pytest.raises(DatasetError, match=r"frame-000001\.depth\.png.*size"):
        read_seven_scenes_sequence(scene / "seq-02")


# ---- KITTI --------------------------------------------------------------------------------------

KITTI_K = np.array([[7.0, 0, 4.1], [0, 7.5, 2.9], [0, 0, 1]])


def make_kitti_val_selection(root, n=2):
    for i in range(n):
        drive, frame = "2011_09_26_drive_0002_sync", f"{5 + i:010d}"
        fx.rgb(root / "image" / f"{drive}_image_{frame}_image_02.png", H, W, seed=i)
        depth = np.zeros((H, W))
        depth[3, 4] = 256 * 10
        fx.u16(root / "groundtruth_depth" / f"{drive}_groundtruth_depth_{frame}_image_02.png", depth)
        fx.matrix_txt(root / "intrinsics" / f"{drive}_image_{frame}_image_02.txt", KITTI_K)
    return root


def test_kitti_val_selection(tmp_path):
    ds = KittiDepthDataset.val_selection(make_kitti_val_selection(tmp_path))
    s = ds[1]
    assert len(ds) == 2 and s.num_views == 1 and s.scene_id == "2011_09_26_drive_0002_sync"
    assert s.depth[0, 3, 4] == pytest.approx(10.0) and s.valid.sum() == 1
    assert torch.allclose(s.K[0], torch.from_numpy(KITTI_K).float()) and torch.equal(s.w2c[0], torch.eye(4))
    assert s.annotations["poses_known"] is False


def test_kitti_val_selection_bad_input(tmp_path):
    root = make_kitti_val_selection(tmp_path)
    name = "2011_09_26_drive_0002_sync_image_0000000006_image_02.txt"
    (root / "intrinsics" / name).write_text("721.5 0 609.5 0 721.5 oops 0 0 1")
    with pytest.raises(DatasetError, match=name):
        KittiDepthDataset.val_selection(root)[1]
    (root / "intrinsics" / name).unlink()
    with pytest.raises(DatasetError, match=name + ": file not found"):
        KittiDepthDataset.val_selection(root)
    fx.corrupt(root / "image" / "2011_09_26_drive_0002_sync_image_0000000005_image_02.png")
    fx.matrix_txt(root / "intrinsics" / name, KITTI_K)
    with pytest.raises(DatasetError, match="sync_image_0000000005_image_02.png: cannot decode"):
        KittiDepthDataset.val_selection(root)[0]


def test_kitti_annotated_raw(tmp_path):
    drive = "2011_09_26_drive_0001_sync"
    depth = np.zeros((H, W))
    depth[2, 2] = 256 * 10
    fx.u16(tmp_path / "ann" / drive / "proj_depth" / "groundtruth" / "image_02" / "0000000005.png", depth)
    fx.rgb(tmp_path / "raw" / "2011_09_26" / drive / "image_02" / "data" / "0000000005.png", H, W)
    P = "7.2e+02 0.0 6.0e+02 4.5e+01 0.0 7.2e+02 1.7e+02 -3.4e-01 0.0 0.0 1.0 2.3e-03"
    calib = tmp_path / "raw" / "2011_09_26" / "calib_cam_to_cam.txt"
    calib.write_text(f"calib_time: 09-Jan-2012 13:57:47\nP_rect_00: {P}\nP_rect_02: {P}\n")
    s = KittiDepthDataset.annotated(tmp_path / "ann", tmp_path / "raw")[0]
    assert s.depth[0, 2, 2] == pytest.approx(10.0) and s.scene_id == drive and s.view_names == ["0000000005"]
    assert torch.allclose(s.K[0], torch.tensor([[720.0, 0, 600.0], [0, 720.0, 170.0], [0, 0, 1]]))
    calib.write_text(f"P_rect_00: {P}\n")
    with pytest.raises(DatasetError, match=r"calib_cam_to_cam\.txt: no line 'P_rect_02'"):
        KittiDepthDataset.annotated(tmp_path / "ann", tmp_path / "raw")[0]
    with pytest.raises(DatasetError, match=r"image_03"):
        KittiDepthDataset.annotated(tmp_path / "ann", tmp_path / "raw", camera="image_03")


def test_kitti_eval_masks():
    garg = kitti_eval_mask(375, 1242, "garg")
    rows = int(0.99189189 * 375) - int(0.40810811 * 375)
    assert garg.sum() == rows * (int(0.96405229 * 1242) - int(0.03594771 * 1242))
    eigen = kitti_eval_mask(375, 1242, "eigen")  # a higher band than Garg's
    assert eigen[124, 44] and not eigen[123, 44] and garg[153, 44] and not garg[152, 44]
    assert not garg[:, 43].any()


# ---- NYU v2 -------------------------------------------------------------------------------------


def make_nyu_mat(path, n=2, h=H, w=W):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8)  # [N, 3, H, W] as we want them
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    depths[-1, 0, 1] = np.nan
    with h5py.File(path, "w") as f:  # MATLAB v7.3 stores them transposed
        f["images"] = images.transpose(0, 1, 3, 2)  # [N, 3, W, H]
        f["depths"] = depths.transpose(0, 2, 1)  # [N, W, H]
    return images, depths


def test_nyu_labeled_mat(tmp_path):
    images, depths = make_nyu_mat(tmp_path / "nyu.mat")
    K = torch.eye(3)
    ds = NYUv2Labeled(tmp_path / "nyu.mat", K=K)
    s = ds[1]
    assert len(ds) == 2 and s.images.shape == (1, 3, H, W)
    assert torch.equal((s.images[0] * 255).round().to(torch.uint8), torch.from_numpy(images[1]))
    assert s.depth[0, 2, 5] == pytest.approx(float(depths[1, 2, 5]))
    assert s.depth[0, 0, 1] == 0 and not s.valid[0, 0, 1]  # NaN -> invalid
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1].images, s.images)  # open handle not pickled
    with pytest.raises(DatasetError, match=r"nyu\.mat: expected NYU's 480x640"):
        NYUv2Labeled(tmp_path / "nyu.mat")
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(DatasetError, match=r"v5\.mat: not an HDF5 file"):
        NYUv2Labeled(tmp_path / "v5.mat")


def test_nyu_labeled_full_size_and_K(tmp_path):
    make_nyu_mat(tmp_path / "nyu.mat", n=1, h=480, w=640)
    s = NYUv2Labeled(tmp_path / "nyu.mat")[0]
    assert s.image_size == (480, 640)
    K = nyu_intrinsics()  # toolbox cx, cy are MATLAB 1-based: minus 0.5
    assert K[0, 2].item() == pytest.approx(325.5824 - 0.5) and K[1, 2].item() == pytest.approx(253.7362 - 0.5)
    assert torch.equal(s.K[0], K) and K[0, 0].item() == pytest.approx(518.8579)
    crop = nyu_eigen_crop_mask()
    assert crop.sum() == (471 - 45) * (601 - 41) and crop[45, 41] and not crop[44, 41] and not crop[45, 601]


def test_nyu_split_and_folder(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2]])})
    assert read_nyu_split(tmp_path / "splits.mat", "train") == [0, 2]
    assert read_nyu_split(tmp_path / "splits.mat", "test") == [1]
    fx.rgb(tmp_path / "f" / "rgb" / "0001.png", H, W)
    depth = np.zeros((H, W))
    depth[1, 1] = 1500
    fx.u16(tmp_path / "f" / "depth" / "0001.png", depth)
    s = NYUv2Folder(tmp_path / "f", K=torch.eye(3))[0]
    assert s.depth[0, 1, 1] == pytest.approx(1.5) and s.view_names == ["0001"]
    fx.rgb(tmp_path / "f" / "rgb" / "0002.png", H, W)
    with pytest.raises(DatasetError, match=r"0002\.png: no partner"):
        NYUv2Folder(tmp_path / "f")


# ---- EndoNeRF -----------------------------------------------------------------------------------


def make_endonerf(root, n=17, focal=9.0):
    for i in range(n):
        fx.rgb(root / "images" / f"{i:06d}.png", H, W, seed=i)
        fx.gray(root / "depth" / f"{i:06d}.png", np.full((H, W), 50 + i))
        mask = np.zeros((H, W))
        mask[:2] = 255  # tool in the top rows
        fx.gray(root / "masks" / f"{i:06d}.png", mask)
    rows = np.concatenate([np.eye(3), np.zeros((3, 1)), [[H], [W], [focal]]], axis=1)  # identity c2w, LLFF
    np.save(root / "poses_bounds.npy", np.tile(np.concatenate([rows.reshape(-1), [0.1, 10.0]]), (n, 1)))
    return root


def test_endonerf(tmp_path):
    clip = make_endonerf(tmp_path / "pulling")
    assert endonerf_split(17, "test") == [1, 9]
    assert endonerf_split(17, "train")[:3] == [0, 2, 3] and len(endonerf_split(17, "train")) == 15
    s = read_endonerf(clip, frames=[0, 9])
    assert torch.allclose(s.times, torch.tensor([0.0, 9 / 17]))
    assert torch.allclose(s.K[0], torch.tensor([[9.0, 0, 4.0], [0, 9.0, 3.0], [0, 0, 1]]))
    assert torch.allclose(s.w2c, torch.eye(4).expand(2, 4, 4), atol=1e-6)
    assert s.depth[1, 0, 0] == pytest.approx(59.0)  # stored units, depth_scale 1
    assert s.masks["tool"][0, :2].all() and not s.masks["tool"][0, 2:].any()
    inverted = read_endonerf(clip, frames=[0], tool_is_white=False, depth_scale=100.0)
    assert not inverted.masks["tool"][0, :2].any() and inverted.depth[0, 0, 0] == pytest.approx(0.5)
    llff = read_endonerf(clip, frames=[0], relative_to_first=False)  # LLFF (down, right, back) -> OpenCV
    assert torch.allclose(llff.w2c[0, :3, :3], torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]))
    ds = EndoNeRFDataset(clip, split="test")
    assert len(ds) == 2 and ds[1].view_names == ["000009"]


def test_endonerf_bad_input(tmp_path):
    clip = make_endonerf(tmp_path / "clip", n=3)
    (clip / "masks" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"clip: expected one entry per frame"):
        read_endonerf(clip)
    fx.gray(clip / "masks" / "000002.png", np.zeros((H, W)))
    fx.gray(clip / "depth" / "000001.png", np.zeros((H + 2, W)))
    with pytest.raises(DatasetError, match=r"000001\.png.*size"):
        read_endonerf(clip)
    bad = np.load(clip / "poses_bounds.npy")
    bad[0, 3] = np.inf
    np.save(clip / "poses_bounds.npy", bad)
    with pytest.raises(DatasetError, match=r"poses_bounds\.npy"):
        read_endonerf(clip)


# ---- image folders ------------------------------------------------------------------------------


def test_folder_assumed_and_given_intrinsics(tmp_path):
    for i in range(2):
        fx.rgb(tmp_path / f"{i}.png", H, W, seed=i)
    (tmp_path / "notes.txt").write_text("ignored")
    s = read_image_folder(tmp_path)
    f = 4.0 / math.tan(math.radians(30))
    assert s.num_views == 2
    assert s.annotations["poses_known"] is False and s.annotations["intrinsics_source"] == "assumed 60 deg fov"
    assert torch.allclose(s.K[0], torch.tensor([[f, 0, 4.0], [0, f, 3.0], [0, 0, 1]]))
    assert torch.equal(s.w2c, torch.eye(4).expand(2, 4, 4))
    (tmp_path / "intrinsics.txt").write_text("5 6 4.5 3.5\n")
    K = read_image_folder(tmp_path).K[1]
    assert torch.allclose(K, torch.tensor([[5.0, 0, 4.5], [0, 6.0, 3.5], [0, 0, 1]]))
    (tmp_path / "intrinsics.txt").write_text("5 0 4\n0 6 3\n0 0 1\n")
    assert read_image_folder(tmp_path).K[0, 1, 1] == 6.0
    (tmp_path / "intrinsics.txt").write_text("5 6 4.5\n")
    with pytest.raises(DatasetError, match=r"intrinsics\.txt: expected 'fx fy cx cy'"):
        read_image_folder(tmp_path)


def test_folder_sizes_and_bad_files(tmp_path):
    fx.rgb(tmp_path / "a.png", H, W)
    fx.rgb(tmp_path / "b.jpg", 2 * H, 2 * W)
    s = read_image_folder(tmp_path)  # a tie: the first file's size
    assert s.images.shape == (2, 3, H, W) and torch.allclose(s.K[1], s.K[0])  # b: 60 deg at 16 px, halved
    s = read_image_folder(tmp_path, size=(2 * H, 2 * W))
    assert s.images.shape == (2, 3, 2 * H, 2 * W) and torch.allclose(s.K[1], s.K[0])
    fx.corrupt(tmp_path / "c.png")
    with pytest.raises(DatasetError, match=r"c\.png: cannot decode"):
        read_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no image files"):
        read_image_folder(tmp_path / "empty")


def test_folder_colmap(tmp_path):
    for i in range(3):
        fx.rgb(tmp_path / f"{i}.png", H, W, seed=i)
    K = torch.tensor([[5.0, 0, 4.0], [0, 5.5, 3.0], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    w2c = torch.stack([torch.eye(4, dtype=torch.float64), torch.from_numpy(np.linalg.inv(fx.c2w_example(0)))])
    write_colmap_text(tmp_path, ["0.png", "2.png"], K, w2c, H, W)
    with pytest.warns(UserWarning, match="1 images not in it left out"):
        s = read_image_folder(tmp_path)
    assert s.view_names == ["0", "2"] and s.annotations["unregistered"] == ["1.png"]
    assert s.annotations["poses_known"] is True and s.annotations["intrinsics_source"] == "colmap"
    assert torch.allclose(s.w2c[1], w2c[1].float(), atol=1e-6) and torch.allclose(s.K, K.float())
