"""Question builders on a tiny synthetic split: exact labels, pose conventions, the arrow marker."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.cameras import depth_to_distance, look_at
from vlm3 import prompts as P
from vlm3.data import QuestionBuilder, TaskDataset, TaskSettings, draw_arrow, pose_targets, ypr_to_matrix
from vlm3.scenes import SceneCache


@pytest.fixture(scope="module")
def cache(data_root):
    return SceneCache(data_root, "train", zoom=(1.0, 1.3), seed=0)


def _w2c(eye, target):
    return look_at(
        torch.tensor(eye, dtype=torch.float64),
        torch.tensor(target, dtype=torch.float64),
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
    )


def test_pose_targets_conventions():
    """yaw > 0 turns right, pitch > 0 looks up, the translation is in camera 1's frame."""
    w2c_1 = _w2c([0, 0, 1], [0, 5, 1])  # looking along +y (world z up)
    turned_right = _w2c([0, 0, 1], [5, 5, 1])  # 45 degrees to the right (world +x is camera-1 right)
    up = _w2c([0, 0, 1], [0, 5, 6])
    moved_right = _w2c([1, 0, 1], [1, 5, 1])
    r = pose_targets(w2c_1, turned_right)
    assert r["ypr"][0] == pytest.approx(45.0, abs=1e-6) and r["angle"] == pytest.approx(45.0, abs=1e-6)
    assert pose_targets(w2c_1, up)["ypr"][1] == pytest.approx(45.0, abs=1e-6)
    m = pose_targets(w2c_1, moved_right)
    assert m["t_unit"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-9) and m["distance"] == pytest.approx(1.0)
    assert P.direction_words(m["t_unit"]) == ["right"]
    R = Rotation.from_euler("YXZ", [20, -10, 5], degrees=True).as_matrix()
    assert ypr_to_matrix([20, -10, 5]) == pytest.approx(R)


def test_depth_labels_are_exact_ray_distances(cache):
    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, depth_max_points=3))
    ex = TaskDataset(builder, "depth", 20, seed=3)[0]
    assert ex.task == "depth" and len(ex.target["depth"]) == len(P.prompt_points(ex.prompt))
    # Recover each labelled pixel from the stored view: the label is depth_to_distance there.
    found = 0
    for s, sample in enumerate(cache.samples):
        dist = depth_to_distance(sample.depth.double(), sample.K.double())  # [V, H, W]
        for d in ex.target["depth"]:
            found += bool(torch.isclose(dist, torch.tensor(d, dtype=torch.float64), rtol=0, atol=1e-9).any())
    assert found == len(ex.target["depth"])
    z = QuestionBuilder(cache, TaskSettings(focal_depth=60, depth_max_points=3, depth_target="z"))
    ez = TaskDataset(z, "depth", 20, seed=3)[0]  # the same draws, labelled with z-depth
    assert "depth (z)" in ez.prompt and ez.target["uv"] == ex.target["uv"]
    assert np.all(np.array(ez.target["depth"]) < np.array(ex.target["depth"]))


def test_focal_unification_sets_the_canonical_focal(cache):
    view = cache.view(0, 1, 60.0, True)
    assert float(view.K[0, 0]) == pytest.approx(60.0) and float(view.K[1, 1]) == pytest.approx(60.0)
    raw = cache.view(0, 1, 60.0, False)
    assert float(raw.K[0, 0]) != pytest.approx(60.0)  # no unification: the captured focal length


def test_correspondence_to_the_same_view_is_the_identity(cache):
    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, pair_gap=(0, 0)))
    ds = TaskDataset(builder, "correspondence", 10, seed=1)
    for i in range(5):
        ex = ds[i]
        assert ex.target["match"] == ex.target["query"]
        assert P.parse_xy(ex.answer) == tuple(float(v) for v in ex.target["query"])


def test_correspondence_pairs_are_consistent_with_depth(cache):
    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, pair_gap=(1, 1)))
    ds = TaskDataset(builder, "correspondence", 10, seed=2)
    ex = ds[0]
    assert len(ex.images) == 2 and all(0 <= v < 1000 for v in ex.target["match"] + ex.target["query"])


def test_several_pixel_correspondences_are_reprojections(cache):
    """Each listed match is its query pixel lifted with the stored depth and projected into view j
    (independently recomputed from the text coordinates); held-out questions ask about one pixel."""
    from common.cameras import map_pixels

    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, pair_gap=(1, 1), corr_max_points=6))
    ds = TaskDataset(builder, "correspondence", 20, seed=3)
    counts = []
    for k in range(8):
        ex = ds[k]
        q, m = np.array(ex.target["queries"]), np.array(ex.target["matches"])  # [n, 2] each
        counts.append(len(q))
        assert P.prompt_points(ex.prompt) == [tuple(p) for p in q.astype(int).tolist()]
        assert P.parse_xy_list(ex.answer) == [tuple(p) for p in m.astype(float).tolist()]
        # Recover (scene, i, j) by matching the images against the cache.
        hits = [
            (s, v)
            for s in range(len(cache))
            for v in range(cache.samples[s].images.shape[0])
            for im in ex.images
            if torch.equal(cache.view(s, v, 60.0, True).image, im)
        ]
        (s, i), (_, j) = hits
        sample, vi, vj = cache.samples[s], cache.view(s, i, 60.0, True), cache.view(s, j, 60.0, True)
        Hi, Wi = vi.image.shape[-2:]
        uv_in = torch.from_numpy(P.denormalize_xy(q, Wi, Hi, P.BOX_SCALE))  # bin centres [n, 2]
        uv0 = map_pixels(uv_in, vi.K, vi.K0).numpy()  # stored-view pixels of view i
        rows, cols = uv0[:, 1].astype(int), uv0[:, 0].astype(int)
        z = sample.depth[i][rows, cols].double().numpy()
        centres = np.stack([cols, rows], -1) + 0.5  # the labelled pixels are pixel centres
        rays = (
            np.concatenate([centres, np.ones((len(z), 1))], -1)
            @ np.linalg.inv(sample.K[i].double().numpy()).T
        )
        c2w_i = np.linalg.inv(sample.w2c[i].double().numpy())
        world = (rays * z[:, None]) @ c2w_i[:3, :3].T + c2w_i[:3, 3]
        w2c_j = sample.w2c[j].double().numpy()
        cam_j = world @ w2c_j[:3, :3].T + w2c_j[:3, 3]
        uvj0 = (cam_j / cam_j[:, 2:]) @ sample.K[j].double().numpy().T  # [n, 3]
        uvj = map_pixels(torch.from_numpy(uvj0[:, :2]), vj.K0, vj.K).numpy()
        Hj, Wj = vj.image.shape[-2:]
        assert np.abs(P.normalize_xy(uvj, Wj, Hj, P.BOX_SCALE) - m).max() <= 1
    assert max(counts) > 1 and min(counts) >= 1
    one = TaskDataset(builder, "correspondence", 20, seed=3, n_points=1)[0]
    assert len(one.target["queries"]) == 1 and P.correspondence_prompt(one.target["query"]) == one.prompt


def test_object_and_pose_questions(cache):
    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, focal_pose=45, min_object_pixels=20))
    obj = TaskDataset(builder, "object", 10, seed=0)[0]
    assert obj.kind in P.OBJECT_QUESTIONS and "bounding box region (" in obj.prompt
    pose = TaskDataset(builder, "pose", 10, seed=0)[0]
    assert pose.kind in P.POSE_QUESTIONS and len(pose.images) == 2
    assert float(cache.view(*pose.target["pair"][:2], 45.0, True).K[0, 0]) == pytest.approx(45.0)


def test_arrow_marker_and_border():
    img = torch.zeros(3, 20, 20)
    out = draw_arrow(img, 10, 10)
    red = (out[0] == 1) & (out[1] == 0) & (out[2] == 0)  # [H, W]
    assert red.sum() == 9 and red[10, 5:10].all() and not red[10, 10]  # tip just left of the pixel
    assert img.sum() == 0  # a copy
    with pytest.raises(ValueError, match="arrow"):
        draw_arrow(img, 3, 10)


def test_marker_questions_use_no_text_coordinates(cache):
    builder = QuestionBuilder(cache, TaskSettings(focal_depth=60, marker=True))
    ex = TaskDataset(builder, "depth", 10, seed=0)[0]
    assert "red arrow" in ex.prompt and P.prompt_points(ex.prompt) == []
    im = ex.images[0]
    assert ((im[0] == 1) & (im[1] == 0) & (im[2] == 0)).sum() >= 9


def test_views_of_a_scene_share_the_captured_camera(cache):
    """One zoom per scene: the views are frames of one camera, so a pair's focal-unified images have
    the same size and intrinsics (the pose prompt says "taken by the same camera")."""
    for s in range(len(cache)):
        Kc = [cache.view(s, v, 60.0, True).Kc for v in range(cache.samples[s].images.shape[0])]
        assert all(torch.equal(k, Kc[0]) for k in Kc)
    assert len({round(cache.zoom_factor(s), 9) for s in range(len(cache))}) == len(cache)


def test_conversations_ask_several_questions_on_the_same_images(cache):
    """turns > 1: the first question is the single-turn item's (same draws); the follow-ups ask about
    the same images and their answers are their own labels."""
    from common.cameras import depth_to_distance

    settings = TaskSettings(focal_depth=60, focal_pose=45, min_object_pixels=20)
    builder = QuestionBuilder(cache, settings)
    for task in ("depth", "correspondence", "pose", "object"):
        single = TaskDataset(builder, task, 6, seed=5)[2]
        conv = TaskDataset(builder, task, 6, seed=5, turns=4)[2]
        assert (conv.prompt, conv.answer) == (single.prompt, single.answer) and conv.images is not None
        assert all(torch.equal(a, b) for a, b in zip(conv.images, single.images)) and single.turns == []
        assert 1 <= len(conv.turns) <= 3
        assert len({p for p, _ in conv.turns} | {conv.prompt}) == len(conv.turns) + 1  # distinct questions
    # Depth: every follow-up value is a ray distance of the first question's view.
    conv = TaskDataset(builder, "depth", 6, seed=5, turns=4)[2]
    s, v = conv.target["where"]
    dist = depth_to_distance(cache.samples[s].depth[v].double(), cache.samples[s].K[v].double())
    for _, answer in conv.turns:
        assert torch.isclose(dist, torch.tensor(P.parse_depth(answer), dtype=torch.float64), atol=0.006).any()
    # Correspondence of a view with itself: each follow-up answers its own query.
    same_view = QuestionBuilder(cache, TaskSettings(focal_depth=60, pair_gap=(0, 0)))
    conv = TaskDataset(same_view, "correspondence", 6, seed=5, turns=4)[2]
    for prompt, answer in conv.turns:
        assert P.parse_xy(answer) == tuple(float(c) for c in P.prompt_points(prompt)[0])
    # Pose: the four question types once each, answered for the same pair.
    conv = TaskDataset(builder, "pose", 6, seed=5, turns=4)[2]
    s, i, j = conv.target["pair"]
    gt = pose_targets(cache.samples[s].w2c[i], cache.samples[s].w2c[j])
    asked = {conv.kind} | {k for k in P.POSE_QUESTIONS for p, _ in conv.turns if p == P.pose_prompt(k)}
    assert asked == set(P.POSE_QUESTIONS)
    for prompt, answer in conv.turns:
        kind = next(k for k in P.POSE_QUESTIONS if P.pose_prompt(k) == prompt)
        assert answer == P.pose_answer(
            kind, angle=gt["angle"], ypr=gt["ypr"], t_unit=gt["t_unit"], distance=gt["distance"]
        )
    with pytest.raises(ValueError, match="take no question arguments"):
        TaskDataset(builder, "pose", 6, seed=5, turns=2, kind="ypr")
