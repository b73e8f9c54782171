"""Tests of common.synthetic: the ground truth agrees with itself, the mesh, the cameras and the
annotations; generation is deterministic. Tiny sizes (40 px, 3 views)."""

import itertools
import math
import re

import numpy as np
import pytest
import torch
import trimesh

from common import cameras as cam
from common.datasets.scene_format import read_index, read_scene, scene_mesh_path
from common.synthetic import (
    DEPTH_SCALE,
    GENERATOR_VERSION,
    PALETTE,
    Scene,
    generate_scene,
    generate_split,
    render_views,
    scene_seed,
)
from common.synthetic.paths import camera_is_clear, sample_intrinsics
from common.synthetic.render import _SceneTensors, cast_rays
from common.synthetic.scene import Primitive

SIZE, VIEWS = 40, 3
SEEDS = {"indoor": 11, "outdoor": 12}


@pytest.fixture(scope="module", params=["indoor", "outdoor"])
def scene(request):
    domain = request.param
    sample, mesh = generate_scene(SEEDS[domain], domain, VIEWS, SIZE)
    return domain, sample, mesh


def _triangle_distances(mesh, points, tol):
    """Exact distance [n] from points [n, 3] to the mesh where it is below `tol` (inf otherwise),
    and the index [n] of the nearest triangle: only triangles whose bounding box, grown by tol,
    holds the point can be that close, so only those are measured."""
    tri = mesh.triangles  # [F, 3, 3]
    lo, hi = tri.min(1) - tol, tri.max(1) + tol  # [F, 3]
    best = np.full(len(points), np.inf)
    face = np.full(len(points), -1)
    for s in range(0, len(points), 200):
        p = points[s:s + 200]
        inside = ((p[:, None] >= lo[None]) & (p[:, None] <= hi[None])).all(-1)  # [n, F]
        i, f = np.nonzero(inside)
        if len(i) == 0:
            continue
        closest = trimesh.triangles.closest_point(tri[f], p[i])  # [pairs, 3]
        dist = np.linalg.norm(closest - p[i], axis=1)
        for k in np.argsort(-dist):  # ascending writes last, so the minimum wins
            best[s + i[k]], face[s + i[k]] = dist[k], f[k]
    return best, face


def _valid_points(sample, count, seed=0):
    """World points [n, 3], world normals [n, 3] and (view, row, col) of `count` valid pixels."""
    world = cam.depth_to_points(sample.depth.double(), sample.K.double(), sample.w2c.double())  # [V, H, W, 3]
    R = sample.w2c[:, :3, :3].double()  # [V, 3, 3]
    n_world = torch.einsum("vji,vjhw->vhwi", R, sample.normals.double())  # [V, H, W, 3], R^T n_cam
    idx = torch.nonzero(sample.valid)  # [m, 3]
    pick = torch.from_numpy(np.random.default_rng(seed).permutation(len(idx))[:count])
    v, r, c = idx[pick].unbind(-1)
    return world[v, r, c].numpy(), n_world[v, r, c].numpy(), (v, r, c)


def test_depth_lies_on_the_mesh_and_normals_agree(scene):
    domain, sample, mesh = scene
    assert mesh.is_watertight
    points, normals, _ = _valid_points(sample, 600)
    tol = 0.005
    dist, face = _triangle_distances(mesh, points, tol)
    assert np.isfinite(dist).all(), f"{(~np.isfinite(dist)).sum()} points farther than {tol} m from the mesh"
    assert dist.max() < (0.002 if domain == "indoor" else 0.003)
    # Rendered normals (camera-facing) agree with the mesh's outward (room: inward) face normals.
    cos = (normals * mesh.face_normals[face]).sum(-1)
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    assert np.median(angle) < 1.0 and np.mean(angle < 5.0) > 0.97, np.percentile(angle, [50, 90, 99])
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1, atol=1e-4)


def _ray_mesh_distance(mesh, origins, dirs):
    """First-hit distance [n] of rays against every triangle (Moller-Trumbore), inf for misses."""
    tri = mesh.triangles  # [F, 3, 3]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]  # [F, 3]
    out = np.full(len(origins), np.inf)
    for k, (o, d) in enumerate(zip(origins, dirs)):
        pvec = np.cross(d, e2)  # [F, 3]
        det = (e1 * pvec).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        tvec = o - tri[:, 0]
        u = (tvec * pvec).sum(-1) * inv
        qvec = np.cross(tvec, e1)
        v = (qvec * d).sum(-1) * inv
        t = (e2 * qvec).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
        if hit.any():
            out[k] = t[hit].min()
    return out


def test_depth_agrees_with_ray_casting_the_mesh(scene):
    domain, sample, mesh = scene
    V, H, W = sample.depth.shape
    origins, dirs = cam.pixel_rays(sample.K.double(), sample.w2c.double(), H, W)  # [V, H, W, 3]
    rng = np.random.default_rng(1)
    v, r, c = rng.integers(V, size=40), rng.integers(H, size=40), rng.integers(W, size=40)
    dist = _ray_mesh_distance(mesh, origins[v, r, c].numpy(), dirs[v, r, c].numpy())  # [40]
    z_axis = sample.w2c[v, 2, :3].double().numpy()  # [40, 3] camera z axis in world
    depth_mesh = dist * (dirs[v, r, c].numpy() * z_axis).sum(-1)
    depth = sample.depth[v, r, c].double().numpy()
    sky = ~sample.valid[v, r, c].numpy()
    assert np.isinf(dist[sky]).all()  # sky rays miss the mesh
    err = np.abs(depth_mesh - depth)[~sky]
    # Along grazing rays the gap between the tessellated and the analytic surface is stretched by
    # 1 / cos(incidence): measure it across the surface (along the normal) instead.
    R = sample.w2c[v, :3, :3].double()  # [40, 3, 3]
    n_world = torch.einsum("nji,nj->ni", R, sample.normals[v, :, r, c].double()).numpy()  # [40, 3]
    cos = np.abs((n_world * dirs[v, r, c].numpy()).sum(-1))[~sky]
    assert (err * cos).max() < 0.002 and np.mean(err < 0.005) > 0.9, (err, cos)


def test_instances_inside_projected_boxes(scene):
    domain, sample, mesh = scene
    V, H, W = sample.depth.shape
    uv_pix = cam.pixel_centers(H, W, dtype=torch.float64)  # [H, W, 2]
    objects = sample.annotations["objects"]
    checked = 0
    for v in range(V):
        for o in objects:
            mask = sample.instances[v] == o["id"]
            if not mask.any():
                continue
            box = Primitive.from_annotation(o)
            assert np.allclose(box.R, np.array(o["R"]))
            corners = cam.transform_points(sample.w2c[v].double(), torch.from_numpy(box.corners()))  # [8, 3]
            if (corners[:, 2] <= 0).any():
                continue  # the box reaches behind the camera: its projection is unbounded
            uv = cam.project(corners, sample.K[v].double())  # [8, 2]
            lo, hi = uv.min(0).values - 1e-6, uv.max(0).values + 1e-6
            pix = uv_pix[mask]  # [m, 2]
            assert ((pix >= lo) & (pix <= hi)).all(), f"view {v} object {o['id']}"
            checked += 1
            # The projected box overlaps the image, and its projected centre lies inside it. (The
            # centre itself may be outside the image where the object is cut by the border, or
            # by an occluder that is.)
            assert lo[0] < W and lo[1] < H and hi[0] > 0 and hi[1] > 0
            centre = cam.project(cam.transform_points(sample.w2c[v].double(),
                                                      torch.tensor([o["center"]], dtype=torch.float64)),
                                 sample.K[v].double())[0]
            assert ((centre >= lo) & (centre <= hi)).all()
            if (lo >= 0).all() and hi[0] <= W and hi[1] <= H:
                assert 0 <= centre[0] <= W and 0 <= centre[1] <= H
    assert checked > 0
    # Annotated 2D boxes are the bounds of the masks.
    for view in sample.annotations["visibility"]["views"]:
        for seen in view["objects"]:
            rows, cols = torch.nonzero(sample.instances[view["index"]] == seen["id"], as_tuple=True)
            assert seen["pixels"] == len(rows)
            assert seen["box2d"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_layout_objects_rest_on_the_floor_apart_and_cameras_are_clear(scene):
    domain, sample, mesh = scene
    s = Scene.from_annotations(sample.annotations)
    ids = [o.id for o in s.objects]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    assert len({(o.color_name, o.category) for o in s.objects}) == len(s.objects)
    for o in s.objects:
        assert abs(o.corners()[:, 2].min()) < 1e-9  # resting on z = 0
        assert tuple(sample.annotations["objects"][ids.index(o.id)]["color"]) == PALETTE[o.color_name]
    for a, b in itertools.combinations(s.objects, 2):
        assert np.hypot(*(a.center[:2] - b.center[:2])) > a.footprint_radius + b.footprint_radius
    for eye in cam.camera_centers(sample.w2c.double()).numpy():
        assert camera_is_clear(s, eye)
        if domain == "indoor":
            lo, hi = s.bounds_center - s.bounds_size / 2, s.bounds_center + s.bounds_size / 2
            assert (eye > lo).all() and (eye < hi).all()
        else:
            assert eye[2] > 0


def test_depth_ranges_sky_and_validity(scene):
    domain, sample, mesh = scene
    depth, valid = sample.depth, sample.valid
    if domain == "indoor":
        assert valid.all()
        assert depth.min() >= 0.3 and depth.max() <= 10.0
    else:
        sky = ~valid
        assert sky.any() and valid.any()
        assert (depth[sky] == 0).all() and (sample.instances[sky] == 0).all()
        assert (sample.normals.norm(dim=1)[sky] == 0).all()
        assert depth[valid].min() >= 1.0 and depth.max() <= 80.0
    assert (sample.instances > 0).any()
    assert sample.images.min() >= 0 and sample.images.max() <= 1 and sample.images.dtype == torch.float32
    # Normals face the camera: n . (point - camera) < 0, in the camera frame the point is the ray.
    pts = cam.depth_to_points(depth, sample.K)  # [V, H, W, 3] camera frame
    facing = (pts * sample.normals.permute(0, 2, 3, 1)).sum(-1)  # [V, H, W]
    assert (facing[valid] < 0).all()


def test_render_views_from_annotations_reproduces_the_views(scene):
    domain, sample, mesh = scene
    out = render_views(Scene.from_annotations(sample.annotations), sample.K, sample.w2c, SIZE, SIZE)
    for key in ("images", "depth", "valid", "normals", "instances"):
        assert torch.equal(out[key], getattr(sample, key)), key


def _desc_ids(objects):
    return {f"the {o['color_name']} {o['category']}": o["id"] for o in objects}


def test_questions_are_true(scene):
    domain, sample, mesh = scene
    ann = sample.annotations
    objects = {o["id"]: o for o in ann["objects"]}
    desc = _desc_ids(ann["objects"])
    eyes = cam.camera_centers(sample.w2c.double()).numpy()  # [V, 3]
    types = set()
    for q in ann["questions"]:
        types.add(q["type"])
        mentioned = re.findall(r"the (\w+ \w+)", q["question"])
        for m in mentioned:  # every object named in the text is named uniquely and listed
            if f"the {m}" in desc:
                assert desc[f"the {m}"] in q["object_ids"]
        v, ids, value = q["view"], q["object_ids"], q["answer_value"]
        if q["type"] == "closer":
            d = {i: np.linalg.norm(eyes[v] - np.array(objects[i]["center"])) for i in ids}
            near = min(ids, key=d.get)
            assert value == near and q["answer"] == next(k for k, i in desc.items() if i == near)
            assert max(d.values()) > 1.1 * min(d.values())
            assert all((sample.instances[v] == i).any() for i in ids)
        elif q["type"] == "left_of":
            centers = torch.tensor([objects[i]["center"] for i in ids], dtype=torch.float64)  # [2, 3]
            pts = cam.transform_points(sample.w2c[v].double(), centers)
            u = cam.project(pts, sample.K[v].double())[:, 0]
            assert value == bool(u[0] < u[1]) and q["answer"] == ("yes" if value else "no")
            assert abs(float(u[0] - u[1])) > 0.05 * SIZE and (pts[:, 2] > 0).all()
        elif q["type"] == "distance":
            d = np.linalg.norm(np.array(objects[ids[0]]["center"]) - np.array(objects[ids[1]]["center"]))
            assert math.isclose(value, d, rel_tol=1e-9) and q["answer"] == f"{d:.2f}"
        elif q["type"] == "depth_at_pixel":
            col, row = q["pixel"]
            assert f"column {col}, row {row}" in q["question"]
            assert value == pytest.approx(float(sample.depth[v, row, col]), abs=1e-6) and value > 0
            on = int(sample.instances[v, row, col])
            assert ids == ([on] if on else [])
        elif q["type"] == "size":
            size = objects[ids[0]]["size"]
            expected = {"height": size[2], "diameter": size[0], "length": max(size[:2])}[q["attribute"]]
            assert math.isclose(value, expected) and q["answer"] == f"{expected:.2f}"
        elif q["type"] == "count":
            (key, wanted), = q["filter"].items()
            counted = sorted(i for i, o in objects.items() if o[key] == wanted)
            assert value == len(counted) and sorted(ids) == counted and q["answer"] == str(value)
        else:
            raise AssertionError(q["type"])
    assert {"closer", "distance", "depth_at_pixel", "size", "count"} <= types


def test_referring_expressions_have_exactly_their_targets(scene):
    domain, sample, mesh = scene
    ann = sample.annotations
    objects = ann["objects"]
    desc = _desc_ids(objects)
    min_pixels = ann["visibility"]["min_pixels"]
    center = {o["id"]: np.array(o["center"]) for o in objects}

    def volume(o):
        sx, sy, sz = o["size"]
        return {"box": sx * sy * sz, "sphere": math.pi / 6 * sx**3, "cylinder": math.pi / 4 * sx**2 * sz,
                "cone": math.pi / 12 * sx**2 * sz}[o["category"]]

    def u_in_view(v, i):
        p = cam.transform_points(sample.w2c[v].double(), torch.from_numpy(center[i][None]))
        uv = cam.project(p, sample.K[v].double())[0]
        inside = p[0, 2] > 0 and 0 <= uv[0] < SIZE and 0 <= uv[1] < SIZE
        return float(uv[0]), bool(inside) and int((sample.instances[v] == i).sum()) >= min_pixels

    kinds = set()
    for ref in ann["referring"]:
        kinds.add(ref["kind"])
        p = ref["program"]
        pool = [o for o in objects if p.get("category") in (None, o["category"])]
        if p["op"] == "attribute":
            got = [o["id"] for o in pool if p.get("color_name") in (None, o["color_name"])]
        elif p["op"] == "extreme":
            key = volume if p["measure"] == "volume" else (lambda o: o["size"][2])
            got = [(max if p["order"] == "max" else min)(pool, key=key)["id"]]
        elif p["op"] == "nearest":
            pool = [o for o in pool if o["id"] != p["anchor"]]
            key = lambda o: np.linalg.norm(center[o["id"]] - center[p["anchor"]])  # noqa: E731
            got = [(min if p["order"] == "min" else max)(pool, key=key)["id"]]
            assert ref["text"].endswith(next(k for k, i in desc.items() if i == p["anchor"]))
        elif p["op"] == "side":
            v = ref["view"]
            u_a, ok = u_in_view(v, p["anchor"])
            assert ok and f"in view {v}" in ref["text"] and p["side"] in ref["text"]
            got = []
            for o in pool:
                if o["id"] == p["anchor"]:
                    continue
                u, seen = u_in_view(v, o["id"])
                if seen and (u < u_a) == (p["side"] == "left"):
                    got.append(o["id"])
        else:
            raise AssertionError(p["op"])
        assert sorted(got) == ref["target_ids"], ref
        assert ref["multi"] == (len(got) > 1)
        if p["op"] == "attribute" and not ref["multi"] and p["color_name"] and p["category"]:
            assert desc[ref["text"]] == got[0]
    assert {"color_category", "superlative"} <= kinds
    assert any(r["multi"] for r in ann["referring"])


def test_annotations_describe_the_scene(scene):
    domain, sample, mesh = scene
    ann = sample.annotations
    assert ann["domain"] == domain
    expected = {"name": "common.synthetic", "version": GENERATOR_VERSION, "seed": SEEDS[domain]}
    assert ann["generator"] == expected
    assert ann["camera_path"]["kind"] in ("orbit", "forward")
    light = ann["light"]
    assert math.isclose(np.linalg.norm(light["direction"]), 1) and light["direction"][2] > 0
    for o in ann["objects"]:
        assert set(o) >= {"id", "category", "color_name", "color", "center", "size", "R", "yaw", "height"}
        assert o["height"] == o["size"][2] and o["center"][2] == pytest.approx(o["height"] / 2)


def test_intersections_known_answers():
    """Rays straight down onto each primitive at the origin, and at a grazing offset that misses."""
    objs = [Primitive(1, "box", "red", np.array([0.0, 0, 0.5]), np.array([2.0, 1.0, 1.0]), math.pi / 4),
            Primitive(2, "sphere", "red", np.array([5.0, 0, 0.5]), np.array([1.0, 1.0, 1.0])),
            Primitive(3, "cylinder", "red", np.array([10.0, 0, 1.0]), np.array([1.0, 1.0, 2.0])),
            Primitive(4, "cone", "red", np.array([15.0, 0, 1.0]), np.array([2.0, 2.0, 2.0]))]
    scene = Scene("indoor", 0, objs, np.array([0.0, 0, 5]), np.array([100.0, 100, 10]), np.array([0.0, 0, 1]),
                  0.4, 0.6, {})
    st = _SceneTensors(scene, "cpu")
    D = torch.float64
    o = torch.tensor([[0.0, 0, 5], [5, 0, 5], [10, 0, 5], [15, 0, 5], [15.5, 0, 5], [10.6, 0, 5], [13, 0, 1]],
                     dtype=D)
    d = torch.tensor([[0.0, 0, -1]] * 6 + [[1.0, 0, 0]], dtype=D)
    hit = cast_rays(st, o, d)
    t = hit["distance"]
    # Tops: box 1, sphere 1, cylinder cap 2, cone apex 2. At x = 15.5 the cone (radius 1 at z = 0,
    # apex at z = 2) has radius 0.5 at z = 1; at x = 10.6 the cylinder (radius 0.5) is missed and
    # the floor (z = 0) is hit; from (13, 0, 1) along +x the cone side is at x = 14.5.
    assert torch.allclose(t, torch.tensor([4.0, 4, 3, 3, 4, 5, 1.5], dtype=D), atol=1e-9)
    assert hit["instance"].tolist() == [1, 2, 3, 4, 4, 0, 4]
    assert torch.allclose(hit["normal"][[0, 1, 2, 3, 5]], torch.tensor([[0.0, 0, 1]] * 5, dtype=D), atol=1e-9)
    k = 0.5  # cone slope r / h: outward normal (cos phi, sin phi, k) / sqrt(1 + k^2)
    assert torch.allclose(hit["normal"][4], torch.tensor([1.0, 0, k], dtype=D) / math.hypot(1, k), atol=1e-9)
    assert torch.allclose(hit["normal"][6], torch.tensor([-1.0, 0, k], dtype=D) / math.hypot(1, k), atol=1e-9)


def test_intrinsics_vary_between_scenes():
    Ks = [sample_intrinsics(np.random.default_rng(s), 96, 128)[0] for s in range(40)]
    fx = torch.stack([K[0, 0] for K in Ks])
    assert fx.std() > 5  # varied field of view
    assert any(abs(K[0, 0] / K[1, 1] - 1) > 0.005 for K in Ks)  # fx != fy
    assert any(abs(K[0, 2] - 64) > 1 for K in Ks) and any(abs(K[0, 2] - 64) < 1e-9 for K in Ks)


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_splits_are_deterministic_and_distinct(tmp_path):
    a = generate_split(tmp_path / "a", "test", scenes=2, views=2, size=24, seed=0, progress=False)
    b = generate_split(tmp_path / "b", "test", scenes=2, views=2, size=24, seed=0, progress=False)
    files_a, files_b = _tree_bytes(a), _tree_bytes(b)
    assert files_a.keys() == files_b.keys() and len(files_a) > 10
    assert all(files_a[k] == files_b[k] for k in files_a)
    c = generate_split(tmp_path / "c", "test", scenes=2, views=2, size=24, seed=1, progress=False)
    d = generate_split(tmp_path / "a", "train", scenes=2, views=2, size=24, seed=0, progress=False)
    for other in (c, d):
        files = _tree_bytes(other)
        assert files["00000_indoor/scene.json"] != files_a["00000_indoor/scene.json"]
        assert files["00000_indoor/rgb/00000.png"] != files_a["00000_indoor/rgb/00000.png"]
    assert scene_seed(0, "train", 0) != scene_seed(0, "test", 0) != scene_seed(1, "test", 0)
    # The written split reads back: index, depth quantised by the domain's depth scale, the mesh.
    index = read_index(a)
    assert index["generator"]["name"] == "common.synthetic" and index["generator"]["split"] == "test"
    assert index["scenes"] == ["00000_indoor", "00001_outdoor"]
    for sid in index["scenes"]:
        s = read_scene(a / sid)
        domain = s.annotations["domain"]
        fresh, _ = generate_scene(scene_seed(0, "test", index["scenes"].index(sid)), domain, 2, 24)
        assert torch.equal(s.valid, fresh.valid) and torch.equal(s.instances, fresh.instances)
        assert (s.depth - fresh.depth).abs().max() <= 0.5 / DEPTH_SCALE[domain] + 1e-6
        assert trimesh.load(scene_mesh_path(a / sid)).is_watertight


def test_cli_writes_a_split(tmp_path, capsys):
    from common.synthetic.__main__ import main

    main(["--out", str(tmp_path), "--split", "val", "--scenes", "1", "--views", "2", "--size", "16", "24",
          "--domains", "outdoor"])
    assert "wrote 1 scenes" in capsys.readouterr().out
    s = read_scene(tmp_path / "val" / "00000_outdoor")
    assert s.image_size == (16, 24) and s.num_views == 2
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--split", "val", "--scenes", "1", "--domains", "underwater"])
