"""Geometry encoder, fusion bias, reconstruction network and loss, relations, TSDF: hand-worked cases."""

import numpy as np
import pytest
import torch

from common.cameras import make_K
from g2vlm.fusion import GeometryCrossAttention
from g2vlm.geometry import GeometryEncoder, depth_normals, knn_graph, voxel_pool
from g2vlm.heads import RelationalGrounding
from g2vlm.recon import ReconstructionNet, metric_outputs, pi3_loss, rotation_from_9d, scale_translation
from g2vlm.relations import RELATIONS, pair_relations


def test_unprojection_and_normals_hand_case():
    enc = GeometryEncoder(dim=8, pixel_stride=1)
    K = make_K(2.0, 2.0, 2.0, 2.0).float()[None]  # 4 x 4 image, principal point at its centre
    depth = torch.full((1, 4, 4), 3.0)
    rgb = torch.zeros(1, 3, 4, 4)
    xyz, normals, feats = enc.pixel_points(rgb, depth, K, torch.eye(4)[None])
    # Pixel (row 0, column 3): centre (3.5, 0.5) -> x = (3.5 - 2) / 2 * 3, y = (0.5 - 2) / 2 * 3.
    assert torch.allclose(xyz[3], torch.tensor([2.25, -2.25, 3.0]))
    assert xyz.shape == (16, 3) and feats.shape == (16, 8)
    n = depth_normals(depth, K)  # a fronto-parallel plane faces the camera
    assert torch.allclose(n[0, 1, 1], torch.tensor([0.0, 0.0, -1.0]))
    w2c = torch.eye(4)
    w2c[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # a camera looking along world +y
    _, world_normals, _ = enc.pixel_points(rgb, depth, K, w2c[None])
    assert torch.allclose(world_normals[5], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)


def test_knn_graph_hand_case():
    xyz = torch.tensor([[float(i), 0.0, 0.0] for i in range(10)])
    nbr = knn_graph(xyz, 2)
    assert set(nbr[5].tolist()) == {4, 6} and set(nbr[0].tolist()) == {1, 2}


def test_voxel_pool_hand_case():
    xyz = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.3, 0.1], [1.4, 0.1, 0.1]])
    feats = torch.tensor([[1.0], [3.0], [10.0]])
    p, f, c = voxel_pool(xyz, feats, size=1.0, max_tokens=8)
    assert c.tolist() == [2, 1] and torch.allclose(f[:, 0], torch.tensor([2.0, 10.0]))
    assert torch.allclose(p[0], torch.tensor([0.15, 0.2, 0.1]))


def test_encoder_is_invariant_to_the_order_of_points():
    torch.manual_seed(0)
    enc = GeometryEncoder(dim=16, knn=4, voxel_sizes=(0.3, 0.6, 1.2), max_tokens=64).eval()
    xyz, normals, feats = (
        torch.rand(300, 3) * 3,
        torch.nn.functional.normalize(torch.randn(300, 3), dim=-1),
        torch.randn(300, 16),
    )
    a = enc.encode_points(xyz, normals, feats)
    perm = torch.randperm(300)
    b = enc.encode_points(xyz[perm], normals[perm], feats[perm])
    assert torch.allclose(a.xyz, b.xyz, atol=1e-5) and torch.allclose(a.feats, b.feats, atol=1e-5)
    assert torch.equal(a.scale, b.scale) and set(a.scale.tolist()) == {0, 1, 2}


def test_geometry_bias_moves_attention_toward_the_referred_region():
    """Two clusters of tokens with nearly the same features; the query prefers cluster A slightly.
    The bias (a Gaussian around the query's soft-argmax focus) moves attention mass onto A."""
    torch.manual_seed(0)
    attn_layer = GeometryCrossAttention(dim=8, geo_dim=8, heads=1, sigma=0.5, use_bias=True)
    with torch.no_grad():
        for lin in (attn_layer.q, attn_layer.k):
            lin.weight.copy_(torch.eye(8))
            lin.bias.zero_()
        attn_layer.norm.weight.fill_(1.0)
    a_xyz, b_xyz = (
        torch.randn(10, 3) * 0.2 + torch.tensor([2.0, 0, 0]),
        torch.randn(10, 3) * 0.2 - torch.tensor([2.0, 0, 0]),
    )
    base = torch.randn(1, 8)
    feats = torch.cat([base + 0.05 * torch.randn(10, 8) + 0.3 * base, base + 0.05 * torch.randn(10, 8)])[None]
    xyz = torch.cat([a_xyz, b_xyz])[None]
    query = (base * 3)[None]  # [1, 1, 8]
    biased, _ = attn_layer.attention(query, feats, xyz)
    attn_layer.use_bias = False
    plain, _ = attn_layer.attention(query, feats, xyz)
    mass = lambda a: float(a[0, 0, 0, :10].sum().detach())  # noqa: E731
    assert 0.5 < mass(plain) < 0.95 and mass(biased) > mass(plain) + 0.04
    attn_layer.use_bias = True
    with torch.no_grad():
        attn_layer.log_sigma.fill_(np.log(100.0))  # a very wide bias is no bias
    wide, _ = attn_layer.attention(query, feats, xyz)
    assert abs(mass(wide) - mass(plain)) < 0.01


def test_fusion_starts_as_identity():
    layer = GeometryCrossAttention(dim=8, geo_dim=4, heads=2)
    x = torch.randn(2, 5, 8)
    out, attn = layer(x, torch.randn(2, 7, 4), torch.randn(2, 7, 3))
    assert torch.equal(out, x) and attn.shape == (2, 2, 5, 7)


def test_relational_grounding_hand_cases():
    """The phrase's weights over [offsets in each view's camera frame, distance, anchor mass] rank the
    candidates by their place relative to the anchor the phrase picks."""
    head = RelationalGrounding(obj_dim=4, text_dim=4, max_views=2)
    boxes = torch.tensor(
        [[0.0, 0, 0, 1, 1, 1], [3.0, 0, 0, 1, 1, 1], [-1.0, 0, 0, 1, 1, 1], [0.0, 5, 0, 1, 1, 1]]
    )  # the anchor is candidate 0
    flip = torch.eye(4)
    flip[0, 0] = flip[2, 2] = -1  # view 1 looks the other way: its x is the world's -x
    w2c = torch.stack([torch.eye(4), flip])
    head.anchor.scores = lambda feats, phrases: torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    phrase, feats = torch.zeros(1, 4), torch.zeros(4, 4)
    assert torch.equal(head(feats, boxes, w2c, phrase), torch.zeros(1, 4))  # starts with no relational term

    def best(**weights) -> int:
        w = torch.zeros(3 * 2 + 2)
        for name, value in weights.items():
            w[{"x0": 0, "x1": 3, "dist": 6, "alpha": 7}[name]] = value
        head.weights[-1].bias.data = w
        return int(head(feats, boxes, w2c, phrase)[0].argmax())

    assert best(dist=-1.0, alpha=-100.0) == 2  # closest to the anchor, the anchor excluded
    assert best(dist=1.0) == 3  # farthest
    assert best(x0=-1.0, alpha=-100.0) == 2  # left of the anchor in view 0
    assert best(x1=-1.0, alpha=-100.0) == 1  # left of it in view 1, which looks the other way


def test_rotations_and_permutation_equivariance():
    R = rotation_from_9d(torch.randn(10, 9))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(10), atol=1e-5)
    assert torch.allclose(rotation_from_9d(torch.eye(3).flatten()[None]), torch.eye(3)[None], atol=1e-6)
    torch.manual_seed(0)
    net = ReconstructionNet(image_size=32, patch_size=8, dim=32, layers=2, heads=4, registers=3).eval()
    views = torch.rand(1, 4, 3, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    a, b = net(views), net(views[:, perm])
    assert torch.allclose(a["local_points"][:, perm], b["local_points"], atol=1e-4)
    assert torch.allclose(a["c2w"][:, perm], b["c2w"], atol=1e-4)
    assert torch.allclose(a["log_scale"], b["log_scale"], atol=1e-5)


def test_pi3_loss_is_free_of_scale_and_frame(scenes):
    from common.cameras import depth_to_points, invert_pose, transform_points

    s = scenes[0]
    depth, K, w2c = s.depth[None], s.K[None], s.w2c[None]
    gt_local = depth_to_points(depth, K)  # [1, V, S, S, 3]
    shift = torch.eye(4)
    shift[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    c2w = shift @ invert_pose(w2c)  # another common frame: only relative poses matter
    k = 2.7  # the point maps' and the translations' scale is free
    in_view0 = transform_points(w2c[0, 0], depth_to_points(depth, K, w2c)[depth > 0])  # [N, 3]
    log_scale = torch.log(in_view0.norm(dim=-1).mean())  # the scale head's target: the mean distance
    perfect = {"local_points": gt_local * k, "c2w": scale_translation(c2w, k), "log_scale": log_scale[None]}
    good = pi3_loss(perfect, depth, K, w2c)
    assert good["points"] < 1e-3 and good["camera"] < 1e-2
    bad = dict(
        perfect, local_points=perfect["local_points"] * torch.linspace(0.5, 1.5, 4)[None, :, None, None, None]
    )
    assert pi3_loss(bad, depth, K, w2c)["points"] > 10 * good["points"] + 1e-3
    depth_m, w2c_rel = metric_outputs(perfect)
    assert depth_m.shape == depth.shape and torch.allclose(w2c_rel[0, 0], torch.eye(4), atol=1e-5)


def test_relations_agree_with_the_synthetic_facts(data_root):
    from common.datasets import SceneDataset
    from g2vlm.data import object_boxes

    checked = 0
    for split in ("train", "test"):
        for sample in SceneDataset(data_root, split, load=()):
            ann = sample.annotations
            boxes = dict(zip([o["id"] for o in ann["objects"]], object_boxes(ann["objects"])))
            for q in ann["questions"]:
                if q["type"] not in ("left_of", "closer"):
                    continue
                v = q["view"]
                a, b = q["object_ids"]
                rel = dict(
                    zip(
                        RELATIONS,
                        pair_relations(
                            boxes[a],
                            boxes[b],
                            sample.K[v].double().numpy(),
                            sample.w2c[v].double().numpy(),
                            sample.image_size[1],
                        ),
                    )
                )
                if q["type"] == "left_of":
                    assert rel["left of"] == q["answer_value"] and rel["right of"] == (not q["answer_value"])
                else:
                    near = q["answer_value"]
                    assert rel["in front of"] == (near == a) and rel["behind"] == (near == b)
                checked += 1
    assert checked >= 4


def test_relation_hand_cases():
    K, w2c = make_K(50.0, 50.0, 50.0, 50.0).double().numpy(), np.eye(4)
    w2c[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]  # looking along +y, z up
    table = np.array([0.0, 5.0, 0.4, 1.0, 1.0, 0.8])
    cup = np.array([0.0, 5.0, 0.9, 0.2, 0.2, 0.2])  # resting on the table
    lamp = np.array([0.0, 5.0, 2.0, 0.2, 0.2, 0.2])  # hanging above it
    rel = lambda a, b: {r for r, x in zip(RELATIONS, pair_relations(a, b, K, w2c, 100)) if x}  # noqa: E731
    assert "on" in rel(cup, table) and "above" not in rel(cup, table) and "near" in rel(cup, table)
    assert "above" in rel(lamp, table) and "below" in rel(table, lamp) and "near" not in rel(lamp, table)
    left = np.array([-2.0, 5.0, 0.4, 0.5, 0.5, 0.8])
    assert "left of" in rel(left, table) and "right of" in rel(table, left)


def test_tsdf_mesh_of_ground_truth_depth(scenes):
    from common.cameras import depth_to_points
    from common.metrics import nearest_neighbor_distances
    from g2vlm.tsdf import tsdf_mesh

    s = next(x for x in scenes if x.domain == "indoor")
    mesh = tsdf_mesh(s.depth, s.K, s.w2c, s.rgb, voxel=0.05)
    gt = depth_to_points(s.depth, s.K, s.w2c)[s.depth > 0].numpy()
    d, _ = nearest_neighbor_distances(np.asarray(mesh.vertices), gt)
    # The ground-truth points are 64 px pixels (a few cm apart at a few metres): within 2 voxels.
    assert np.median(d) < 0.1 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)


def test_bad_settings_are_named():
    from common.config import ConfigError
    from g2vlm.config import load_config

    with pytest.raises(ConfigError, match="model.voxel_sizes: expected at least three sizes"):
        load_config(None, ["model.voxel_sizes=[0.5, 1.0]"])
    with pytest.raises(ConfigError, match="data.sensor_dropout: expected in"):
        load_config(None, ["data.sensor_dropout=1.5"])
