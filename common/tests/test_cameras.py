"""Tests of common.cameras: known answers, round trips, and agreement with scipy / torch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from common import cameras as cam
from common.errors import DatasetError

D = torch.float64


def random_rotations(n, seed=0):
    return torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())  # [n, 3, 3]


def random_w2c(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = torch.eye(4, dtype=D).repeat(n, 1, 1)
    T[:, :3, :3] = random_rotations(n, seed)
    T[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=D)
    return T  # [n, 4, 4]


def rotation_about(axis, angle):
    axis = np.asarray(axis, dtype=np.float64)
    return torch.from_numpy(Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix())


# ---------------------------------------------------------------------------------------------
# Intrinsics and projection
# ---------------------------------------------------------------------------------------------


def test_make_K_and_fov_round_trip():
    K = cam.make_K(100.0, 120.0, 50.0, 60.0)
    assert K.dtype == torch.get_default_dtype()
    assert torch.equal(K, torch.tensor([[100.0, 0, 50], [0, 120, 60], [0, 0, 1]]))
    K = cam.make_K(torch.tensor([1.0, 2.0], dtype=D), 3.0, 4.0, 5.0)  # broadcast, dtype follows tensor
    assert K.shape == (2, 3, 3) and K.dtype == D and K[1, 0, 0] == 2 and K[1, 1, 1] == 3

    # 90 degrees over 200 px: fx = 100, principal point at the centre.
    K = cam.intrinsics_from_fov(math.pi / 2, 2 * math.atan(0.75), 200, 150)
    expected = torch.tensor([[100.0, 0, 100], [0, 100, 75], [0, 0, 1]])
    assert torch.allclose(K, expected, atol=1e-4)
    fov_x, fov_y = cam.fov_from_intrinsics(K, 200, 150)
    assert math.isclose(fov_x.item(), math.pi / 2, rel_tol=1e-6)
    assert math.isclose(fov_y.item(), 2 * math.atan(0.75), rel_tol=1e-6)


def test_fov_off_centre_principal_point():
    # Left edge 0 px and right edge 100 px from cx = 0 with fx = 100: fov = 0 + 45 degrees.
    fov_x, _ = cam.fov_from_intrinsics(cam.make_K(100.0, 100.0, 0.0, 50.0), 100, 100)
    assert math.isclose(fov_x.item(), math.pi / 4, rel_tol=1e-6)


def test_pixel_centers():
    uv = cam.pixel_centers(2, 3, dtype=D)
    assert uv.shape == (2, 3, 2) and uv.dtype == D
    assert uv[0, 0].tolist() == [0.5, 0.5]
    assert uv[1, 2].tolist() == [2.5, 1.5]  # (u + 0.5, v + 0.5): x first


def test_project_hand_worked():
    K = cam.make_K(100.0, 80.0, 50.0, 60.0)
    uv = cam.project(torch.tensor([[1.0, 2.0, 4.0]]), K)
    assert uv.tolist() == [[75.0, 100.0]]  # 100 * 1/4 + 50, 80 * 2/4 + 60
    # Batched K [2, 3, 3] against points [2, 5, 3]; and no clamping behind the camera.
    K2 = torch.stack([K, cam.make_K(200.0, 80.0, 50.0, 60.0)])
    pts = torch.tensor([1.0, 2.0, 4.0]).expand(2, 5, 3)
    assert cam.project(pts, K2)[1, 3].tolist() == [100.0, 100.0]
    assert cam.project(torch.tensor([[1.0, 2.0, -4.0]]), K).tolist() == [[25.0, 20.0]]


def test_project_unproject_round_trip():
    g = torch.Generator().manual_seed(0)
    K = cam.make_K(torch.tensor([300.0, 500.0], dtype=D), 310.0, 160.0, 120.0)  # [2, 3, 3]
    K[1, 0, 1] = 2.0  # skew is handled too
    pts = torch.randn(2, 7, 3, generator=g, dtype=D)
    pts[..., 2] = pts[..., 2].abs() + 0.5
    uv = cam.project(pts, K)
    assert torch.allclose(cam.unproject(uv, pts[..., 2], K), pts, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------


def test_transform_invert_pose_camera_centers():
    T = random_w2c(5)
    inv = cam.invert_pose(T)
    assert torch.allclose(inv, torch.linalg.inv(T), atol=1e-12)
    assert torch.allclose(inv @ T, torch.eye(4, dtype=D).expand(5, 4, 4), atol=1e-12)
    pts = torch.randn(5, 4, 3, dtype=D)
    assert torch.allclose(cam.transform_points(inv, cam.transform_points(T, pts)), pts, atol=1e-12)
    centers = cam.camera_centers(T)  # [5, 3]
    assert torch.allclose(cam.transform_points(T, centers[:, None]), torch.zeros(5, 1, 3, dtype=D),
                          atol=1e-12)
    assert torch.allclose(centers, inv[:, :3, 3], atol=1e-12)


def test_relative_pose():
    w2c = random_w2c(4, seed=1)
    rel = cam.relative_pose(w2c[0], w2c)  # [4, 4, 4]
    assert torch.allclose(rel[0], torch.eye(4, dtype=D), atol=1e-12)
    # Maps camera-0 coordinates of a world point to camera-b coordinates.
    X = torch.randn(1, 3, dtype=D)
    x0 = cam.transform_points(w2c[0], X)
    x_b = cam.transform_points(w2c, X.expand(4, 1, 3))
    assert torch.allclose(cam.transform_points(rel, x0.expand(4, 1, 3)), x_b)


def test_look_at_hand_worked():
    # From (0, 0, -5) to the origin with world y up: camera z = +z, camera y = -y, x = y x z = -x.
    w2c = cam.look_at(torch.tensor([0.0, 0, -5]), torch.zeros(3), torch.tensor([0.0, 1, 0]))
    expected = torch.tensor([[-1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]])
    assert torch.allclose(w2c, expected, atol=1e-7)


def test_look_at_random_properties():
    g = torch.Generator().manual_seed(2)
    eye, target = torch.randn(6, 3, generator=g, dtype=D), torch.randn(6, 3, generator=g, dtype=D)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=D)
    w2c = cam.look_at(eye, target, up)
    R = w2c[:, :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=D).expand(6, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(6, dtype=D))
    assert torch.allclose(cam.camera_centers(w2c), eye, atol=1e-12)
    t_cam = cam.transform_points(w2c, target[:, None])[:, 0]  # target on the optical axis, in front
    assert torch.allclose(t_cam[:, :2], torch.zeros(6, 2, dtype=D), atol=1e-12) and (t_cam[:, 2] > 0).all()
    up_cam = R @ up  # up in the camera frame points to -y (image up) and has no x component
    assert (up_cam[:, 1] < 0).all() and torch.allclose(up_cam[:, 0], torch.zeros(6, dtype=D), atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        cam.look_at(torch.zeros(3), torch.tensor([0.0, 0, 1]), torch.tensor([0.0, 0, 1]))


def test_pixel_rays():
    K = cam.make_K(50.0, 40.0, 16.0, 12.0).double()
    w2c = random_w2c(2, seed=3)
    origins, dirs = cam.pixel_rays(K, w2c, 6, 8)
    assert origins.shape == dirs.shape == (2, 6, 8, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 6, 8, dtype=D))
    assert torch.allclose(origins, cam.camera_centers(w2c)[:, None, None].expand(2, 6, 8, 3))
    # A point 3 m along each ray projects back onto its pixel centre, in front of the camera.
    p_cam = cam.transform_points(w2c, (origins + 3 * dirs).reshape(2, -1, 3))  # [2, 48, 3]
    assert (p_cam[..., 2] > 0).all()
    uv = cam.project(p_cam, K).reshape(2, 6, 8, 2)
    assert torch.allclose(uv, cam.pixel_centers(6, 8, dtype=D).expand(2, 6, 8, 2), atol=1e-9)


def test_depth_to_points_projects_to_pixel_centres():
    g = torch.Generator().manual_seed(4)
    K = cam.make_K(60.0, 55.0, 10.0, 7.0).double()
    depth = torch.rand(2, 5, 9, generator=g, dtype=D) + 0.5  # [2, H, W]
    pts = cam.depth_to_points(depth, K)  # [2, 5, 9, 3]
    assert torch.allclose(pts[..., 2], depth)
    uv = cam.project(pts.reshape(2, -1, 3), K).reshape(2, 5, 9, 2)
    assert torch.allclose(uv, cam.pixel_centers(5, 9, dtype=D).expand_as(uv), atol=1e-10)
    w2c = random_w2c(2, seed=5)
    world = cam.depth_to_points(depth, K, w2c)
    back = cam.transform_points(w2c, world.reshape(2, -1, 3)).reshape(2, 5, 9, 3)
    assert torch.allclose(back, pts, atol=1e-12)


def test_depth_distance_round_trip():
    K = cam.make_K(40.0, 50.0, 4.0, 3.0).double()
    depth = torch.rand(3, 6, 8, dtype=D) + 0.1
    depth[0, 0, 0] = 0  # invalid depth stays 0
    distance = cam.depth_to_distance(depth, K)
    assert torch.allclose(distance, cam.depth_to_points(depth, K).norm(dim=-1))
    assert distance[0, 0, 0] == 0
    assert torch.allclose(cam.distance_to_depth(distance, K), depth, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------------


def test_quaternions_match_scipy():
    rot = Rotation.random(50, random_state=6)
    R = torch.from_numpy(rot.as_matrix())
    q_scipy = torch.from_numpy(rot.as_quat()[:, [3, 0, 1, 2]])  # scipy is (x, y, z, w)
    assert torch.allclose(cam.quaternion_to_matrix(q_scipy), R, atol=1e-12)
    assert torch.allclose(cam.quaternion_to_matrix(3 * q_scipy), R, atol=1e-12)  # normalises
    q = cam.matrix_to_quaternion(R)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(q, q_scipy * torch.sign(q_scipy[:, :1]), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 1.0, math.pi - 1e-4, math.pi - 1e-9, math.pi])
def test_quaternion_axis_angle_round_trips_near_0_and_180(angle):
    axes = torch.from_numpy(np.random.default_rng(7).normal(size=(8, 3)))
    axes = axes / axes.norm(dim=-1, keepdim=True)
    rotvec = axes * angle  # [8, 3]
    R = cam.axis_angle_to_matrix(rotvec)
    R_scipy = torch.from_numpy(Rotation.from_rotvec(rotvec.numpy()).as_matrix())
    assert torch.allclose(R, R_scipy, atol=1e-12)
    q = cam.matrix_to_quaternion(R)
    assert torch.allclose(q.norm(dim=-1), torch.ones(8, dtype=D))
    assert torch.allclose(cam.quaternion_to_matrix(q), R, atol=1e-12)
    back = cam.matrix_to_axis_angle(R)
    if angle < math.pi:
        assert torch.allclose(back, rotvec, atol=1e-9)
    else:  # at exactly pi, v and -v are the same rotation
        assert torch.allclose(back.abs(), rotvec.abs(), atol=1e-7)
    assert torch.allclose(cam.axis_angle_to_matrix(back), R, atol=1e-9)


def test_axis_angle_matches_scipy_and_is_differentiable_at_zero():
    rot = Rotation.random(20, random_state=8)
    R = torch.from_numpy(rot.as_matrix())
    assert torch.allclose(cam.matrix_to_axis_angle(R), torch.from_numpy(rot.as_rotvec()), atol=1e-10)
    v = torch.zeros(3, dtype=D, requires_grad=True)
    assert torch.equal(cam.axis_angle_to_matrix(v), torch.eye(3, dtype=D))
    (cam.axis_angle_to_matrix(v)[2, 1]).backward()  # dR/dv at 0 is the cross-product matrix
    assert torch.allclose(v.grad, torch.tensor([1.0, 0, 0], dtype=D))
    R0 = torch.eye(3, dtype=D, requires_grad=True)
    cam.matrix_to_axis_angle(R0).sum().backward()
    assert torch.isfinite(R0.grad).all()


def test_rotation_angles():
    rotvec = torch.from_numpy(np.random.default_rng(9).normal(size=(10, 3)))
    rotvec = rotvec / rotvec.norm(dim=-1, keepdim=True) * torch.linspace(0, math.pi, 10, dtype=D)[:, None]
    R = cam.axis_angle_to_matrix(rotvec)
    assert torch.allclose(cam.rotation_angle(R), rotvec.norm(dim=-1), atol=1e-7)
    R_a = random_rotations(10, seed=10)
    R_b = R_a @ rotation_about([0, 0, 1], 0.3)
    assert torch.allclose(cam.relative_rotation_angle(R_a, R_b), torch.full((10,), 0.3, dtype=D))
    assert torch.allclose(cam.relative_rotation_angle(R_a, R_a), torch.zeros(10, dtype=D), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------


def test_opengl_converters():
    w2c = random_w2c(5, seed=11)
    c2w_gl = cam.w2c_to_opengl_c2w(w2c)
    assert torch.allclose(cam.opengl_c2w_to_w2c(c2w_gl), w2c, atol=1e-12)
    # An OpenGL camera at the origin looks down -z with y up: OpenCV w2c = diag(1, -1, -1, 1).
    w2c_identity = cam.opengl_c2w_to_w2c(torch.eye(4, dtype=D))
    assert torch.allclose(w2c_identity, torch.diag(torch.tensor([1.0, -1, -1, 1], dtype=D)))
    # A point in front of the GL camera (negative GL z, positive GL y) has positive depth, y < 0.
    p_gl = torch.tensor([[0.5, 1.0, -3.0]], dtype=D)
    world = cam.transform_points(c2w_gl, p_gl.expand(5, 1, 3))
    p_cv = cam.transform_points(w2c, world)
    assert torch.allclose(p_cv, torch.tensor([[[0.5, -1.0, 3.0]]], dtype=D).expand(5, 1, 3), atol=1e-12)


def test_llff_round_trip_and_layout(tmp_path):
    w2c = random_w2c(3, seed=12)
    focal = torch.tensor([400.0, 410.0, 420.0], dtype=D)
    K = cam.make_K(focal, focal, 320.0, 240.0)
    near_far = torch.tensor([[0.5, 10.0], [0.6, 11.0], [0.7, 12.0]], dtype=D)
    path = tmp_path / "poses_bounds.npy"
    cam.write_llff_poses_bounds(path, K, w2c, 480, 640, near_far)
    data = cam.read_llff_poses_bounds(path)
    assert data["height"] == 480 and data["width"] == 640
    assert torch.allclose(data["K"], K) and torch.allclose(data["w2c"], w2c, atol=1e-12)
    assert torch.equal(data["near_far"], near_far)

    # Layout: the identity OpenCV camera at (1, 2, 3) has LLFF columns down = +y, right = +x,
    # backwards = -z, then the centre, then (H, W, focal).
    w2c0 = cam.invert_pose(torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=D))
    cam.write_llff_poses_bounds(path, K[:1], w2c0[None], 480, 640, near_far[:1])
    row = np.load(path)[0]
    expected = [[0, 1, 0, 1, 480], [1, 0, 0, 2, 640], [0, 0, -1, 3, 400]]
    assert np.allclose(row[:15].reshape(3, 5), expected) and np.allclose(row[15:], [0.5, 10.0])


def test_llff_rejects_what_it_cannot_store(tmp_path):
    w2c, near_far, path = random_w2c(1), torch.tensor([[0.5, 10.0]]), tmp_path / "a.npy"
    anisotropic, off_centre = cam.make_K(400.0, 410.0, 320.0, 240.0), cam.make_K(400.0, 400.0, 300.0, 240.0)
    with pytest.raises(ValueError, match="fx != fy"):
        cam.write_llff_poses_bounds(path, anisotropic[None], w2c, 480, 640, near_far)
    with pytest.raises(ValueError, match="principal point"):
        cam.write_llff_poses_bounds(path, off_centre[None], w2c, 480, 640, near_far)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 15)))
    with pytest.raises(DatasetError, match="bad.npy.*\\[N, 17\\]"):
        cam.read_llff_poses_bounds(bad)
    with pytest.raises(DatasetError, match="missing.npy"):
        cam.read_llff_poses_bounds(tmp_path / "missing.npy")


def test_colmap_round_trip(tmp_path):
    w2c = random_w2c(3, seed=13)
    K = torch.stack([cam.make_K(500.0, 510.0, 320.5, 239.25), cam.make_K(300.0, 300.0, 160.0, 120.0),
                     cam.make_K(1000.0, 990.0, 512.0, 384.0)]).double()
    names = ["a.png", "sub/b.jpg", "c d.png"]
    cam.write_colmap_text(tmp_path, names, K, w2c, [480, 240, 768], torch.tensor([640, 320, 1024]))
    assert (tmp_path / "points3D.txt").is_file()
    data = cam.read_colmap_text(tmp_path)
    assert data["names"] == names and data["camera_models"] == ["PINHOLE"] * 3
    assert torch.equal(data["K"], K)
    assert torch.allclose(data["w2c"], w2c, atol=1e-12)
    assert data["heights"].tolist() == [480, 240, 768] and data["widths"].tolist() == [640, 320, 1024]
    assert data["distortion"] == [[], [], []]


def test_colmap_hand_written(tmp_path):
    (tmp_path / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "1 SIMPLE_PINHOLE 640 480 500 320 240\n"
        "2 PINHOLE 640 480 500 510 321 241\n"
        "3 SIMPLE_RADIAL 800 600 700 400 300 0.01\n"
        "4 RADIAL 800 600 700 401 301 0.01 -0.02\n"
        "5 OPENCV 1024 768 900 910 512 384 0.1 -0.2 0.001 0.002\n"
    )
    h = math.sqrt(0.5)  # 90 degrees about z: R = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    images = "# Image list with two lines of data per image:\n"
    for i in range(1, 6):
        images += f"{i} {h} 0 0 {h} 1 2 3 {6 - i} img{i}.png\n"
        images += "10.5 20.5 -1 30 40 7\n" if i == 2 else "\n"
    (tmp_path / "images.txt").write_text(images)
    data = cam.read_colmap_text(tmp_path)
    assert data["names"] == [f"img{i}.png" for i in range(1, 6)]
    assert data["camera_ids"] == [5, 4, 3, 2, 1]
    assert data["camera_models"] == ["OPENCV", "RADIAL", "SIMPLE_RADIAL", "PINHOLE", "SIMPLE_PINHOLE"]
    assert data["distortion"] == [[0.1, -0.2, 0.001, 0.002], [0.01, -0.02], [0.01], [], []]
    assert data["K"][0].tolist() == [[900, 0, 512], [0, 910, 384], [0, 0, 1]]
    assert data["K"][1].tolist() == [[700, 0, 401], [0, 700, 301], [0, 0, 1]]
    assert data["K"][4].tolist() == [[500, 0, 320], [0, 500, 240], [0, 0, 1]]
    assert data["heights"].tolist() == [768, 600, 600, 480, 480]
    expected = torch.tensor([[0.0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=D)
    assert torch.allclose(data["w2c"], expected.expand(5, 4, 4), atol=1e-12)
    assert torch.allclose(cam.camera_centers(data["w2c"][0]), torch.tensor([-2.0, 1, -3], dtype=D))


def test_colmap_bad_input(tmp_path):
    cam.write_colmap_text(tmp_path, ["a.png"], cam.make_K(1.0, 1.0, 1.0, 1.0)[None], torch.eye(4)[None], 2, 2)
    images = tmp_path / "images.txt"
    images.write_text("1 1 0 0 0 0 0 0 1\n\n")  # NAME missing
    with pytest.raises(DatasetError, match="images.txt.*line 1"):
        cam.read_colmap_text(tmp_path)
    images.write_text("1 1 0 0 0 0 0 0 7 a.png\n\n")  # unknown camera
    with pytest.raises(DatasetError, match="camera id 7"):
        cam.read_colmap_text(tmp_path)
    (tmp_path / "cameras.txt").write_text("1 FISHEYE 2 2 1 1 1\n")
    with pytest.raises(DatasetError, match="cameras.txt.*FISHEYE"):
        cam.read_colmap_text(tmp_path)
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 2 2 1 1 1\n")  # one parameter short
    with pytest.raises(DatasetError, match="cameras.txt.*line 1.*4 parameters"):
        cam.read_colmap_text(tmp_path)
    with pytest.raises(DatasetError, match="cameras.txt"):
        cam.read_colmap_text(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# Image geometry
# ---------------------------------------------------------------------------------------------


def test_resize_and_crop_intrinsics_by_projection():
    K = cam.make_K(100.0, 90.0, 31.0, 22.0).double()
    X = torch.tensor([[0.3, -0.2, 2.0]], dtype=D)
    uv = cam.project(X, K)
    uv_resized = cam.project(X, cam.resize_intrinsics(K, (48, 64), (36, 96)))
    assert torch.allclose(uv_resized, uv * torch.tensor([96 / 64, 36 / 48], dtype=D))
    uv_cropped = cam.project(X, cam.crop_intrinsics(K, top=5, left=7))
    assert torch.allclose(uv_cropped, uv - torch.tensor([7.0, 5.0], dtype=D))


def test_resample_identity_is_exact():
    g = torch.Generator().manual_seed(14)
    K = cam.make_K(40.0, 42.0, 15.3, 11.7)
    image = torch.rand(2, 3, 24, 32, generator=g)
    assert torch.equal(cam.resample_to_intrinsics(image, K, K, (24, 32), mode="nearest"), image)
    assert torch.allclose(cam.resample_to_intrinsics(image, K, K, (24, 32)), image, atol=1e-6)
    ids = torch.randint(0, 2**40, (1, 24, 32), generator=g)  # int64 ids stay exact
    assert torch.equal(cam.resample_to_intrinsics(ids, K, K, (24, 32), mode="nearest"), ids)
    with pytest.raises(ValueError, match="floating"):
        cam.resample_to_intrinsics(ids, K, K, (24, 32))


def test_resize_matches_interpolate_when_upsampling():
    image = torch.rand(2, 3, 10, 14, dtype=D)
    K = cam.make_K(20.0, 20.0, 7.0, 5.0).double()
    out, K_new = cam.resize(image, K, (25, 21))
    reference = F.interpolate(image, size=(25, 21), mode="bilinear", align_corners=False)
    assert torch.allclose(out, reference, atol=1e-12)
    assert torch.allclose(K_new, cam.make_K(30.0, 50.0, 10.5, 12.5).double())
    out_nearest, _ = cam.resize(image, K, (20, 28), mode="nearest")
    assert torch.equal(out_nearest, image.repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_antialias_when_downsampling():
    v, u = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    checker = ((u + v) % 2).double()[None]  # [1, 48, 48], the highest frequency an image holds
    K = cam.make_K(48.0, 48.0, 24.0, 24.0).double()
    aliased, _ = cam.resize(checker, K, (16, 16), antialias=False)  # factor 3 lands on pixel centres
    smooth, _ = cam.resize(checker, K, (16, 16))
    assert aliased.std() > 0.4  # a full-contrast false pattern
    assert (smooth - 0.5).abs().max() < 0.02
    constant, _ = cam.resize(torch.full((1, 48, 48), 0.7, dtype=D), K, (16, 16))
    assert torch.allclose(constant, torch.full_like(constant, 0.7))  # no dark border


def test_crop_image():
    image = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6)
    K = cam.make_K(10.0, 10.0, 3.0, 2.5)
    out, K_new = cam.crop(image, K, top=1, left=2, height=3, width=4)
    assert torch.equal(out, image[:, 1:4, 2:6])
    assert torch.equal(K_new, cam.make_K(10.0, 10.0, 1.0, 1.5))
    # The crop equals the exact warp to K_new (nearest), including zeros outside the image.
    out, K_new = cam.crop(image, K, top=-1, left=3, height=4, width=5)
    assert torch.equal(out, cam.resample_to_intrinsics(image, K, K_new, (4, 5), mode="nearest"))
    assert out[:, 0].abs().sum() == 0 and out[:, :, 3:].abs().sum() == 0


def test_map_pixels():
    K_src = cam.make_K(100.0, 80.0, 50.0, 40.0).double()
    K_dst = cam.make_K(200.0, 120.0, 90.0, 70.0).double()
    uv = torch.tensor([[60.0, 30.0]], dtype=D)
    # x' = (60 - 50) * 2 + 90 = 110, y' = (30 - 40) * 1.5 + 70 = 55
    assert torch.allclose(cam.map_pixels(uv, K_src, K_dst), torch.tensor([[110.0, 55.0]], dtype=D))
    # Pixel centres under a resize of 8x6 -> 16x3 land on the scaled centres.
    centers = cam.pixel_centers(6, 8, dtype=D).reshape(-1, 2)
    K_small = cam.make_K(8.0, 6.0, 4.0, 3.0).double()
    mapped = cam.map_pixels(centers, K_small, cam.resize_intrinsics(K_small, (6, 8), (3, 16)))
    assert torch.allclose(mapped, centers * torch.tensor([2.0, 0.5], dtype=D))


@pytest.mark.parametrize("focal", [50.0, 150.0])
def test_unify_focal_moves_a_bright_pixel_where_map_pixels_says(focal):
    image = torch.zeros(1, 60, 80)
    image[0, 20, 30] = 1.0
    K = cam.make_K(100.0, 100.0, 40.0, 30.0)
    out, K_new = cam.unify_focal(image, K, focal)
    assert K_new[0, 0] == focal and K_new[1, 1] == focal
    assert out.shape == (1, math.floor(60 * focal / 100), math.floor(80 * focal / 100))
    expected = cam.map_pixels(torch.tensor([[30.5, 20.5]]), K, K_new)[0]
    flat = out[0].argmax()
    found = torch.tensor([flat % out.shape[-1] + 0.5, flat // out.shape[-1] + 0.5])
    assert (found - expected).abs().max() <= 1.0


def test_unify_focal_anisotropic_is_the_exact_warp():
    # A linear ramp is reproduced exactly by bilinear sampling (and by a symmetric blur), so the
    # interior of the result checks the warp and K_new to float64 precision.
    H, W = 40, 50
    uv = cam.pixel_centers(H, W, dtype=D)
    image = (0.3 * uv[..., 0] - 0.7 * uv[..., 1] + 5)[None]  # [1, H, W]
    K = cam.make_K(100.0, 80.0, 26.0, 19.0).double()
    for focal in (120.0, 60.0):
        out, K_new = cam.unify_focal(image, K, focal)
        assert K_new[0, 0] == focal and K_new[1, 1] == focal
        assert out.shape == (1, math.floor(H * focal / 80), math.floor(W * focal / 100))
        assert torch.allclose(K_new[:2, 2], torch.tensor([26.0 * focal / 100, 19.0 * focal / 80], dtype=D))
        src = cam.map_pixels(cam.pixel_centers(*out.shape[-2:], dtype=D).reshape(-1, 2), K_new, K)
        expected = (0.3 * src[:, 0] - 0.7 * src[:, 1] + 5).reshape(out.shape[-2:])
        margin = 4  # away from the replicated borders
        inner = (slice(margin, -margin), slice(margin, -margin))
        assert torch.allclose(out[0][inner], expected[inner], atol=1e-9)
    depth = torch.rand(1, H, W)  # nearest never blends: every output value is an input value
    out, _ = cam.unify_focal(depth, K.float(), 70.0, mode="nearest")
    assert torch.isin(out, depth).all()


def test_unify_focal_rejects_mixed_batches():
    K = torch.stack([cam.make_K(100.0, 100.0, 40.0, 30.0), cam.make_K(50.0, 100.0, 40.0, 30.0)])
    with pytest.raises(ValueError, match="different unified sizes"):
        cam.unify_focal(torch.zeros(2, 1, 60, 80), K, 100.0)


# ---------------------------------------------------------------------------------------------
# Validation and dtype/device
# ---------------------------------------------------------------------------------------------


def test_shape_errors_name_the_argument():
    K = cam.make_K(1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"K must have shape \[\.\.\., 3, 3\], got \[4, 4\]"):
        cam.project(torch.ones(5, 3), torch.eye(4))
    with pytest.raises(ValueError, match=r"points_cam must have shape \[\.\.\., N, 3\]"):
        cam.project(torch.ones(5, 2), K)
    with pytest.raises(ValueError, match="depth"):
        cam.unproject(torch.ones(5, 2), torch.ones(4), K)
    with pytest.raises(ValueError, match=r"w2c must have shape \[\.\.\., 4, 4\]"):
        cam.camera_centers(torch.eye(3))
    with pytest.raises(ValueError, match="image"):
        cam.resize(torch.ones(4, 4), K, (2, 2))


def test_dtype_and_batch_dims_are_kept():
    for dtype in (torch.float32, torch.float64):
        K = cam.make_K(10.0, 10.0, 4.0, 3.0).to(dtype)
        w2c = random_w2c(1).to(dtype).expand(2, 3, 4, 4)  # leading dims [2, 3]
        origins, dirs = cam.pixel_rays(K, w2c, 6, 8)
        assert dirs.shape == (2, 3, 6, 8, 3) and dirs.dtype == dtype
        assert cam.depth_to_points(torch.ones(2, 3, 6, 8, dtype=dtype), K, w2c).dtype == dtype
        assert cam.matrix_to_quaternion(w2c[..., :3, :3]).shape == (2, 3, 4)
        assert cam.matrix_to_axis_angle(w2c[..., :3, :3]).dtype == dtype
        img, K_new = cam.resize(torch.rand(2, 3, 1, 6, 8, dtype=dtype), K, (3, 4))
        assert img.shape == (2, 3, 1, 3, 4) and img.dtype == dtype and K_new.dtype == dtype
