"""The shared tasks score the truth perfectly and wrong answers worse, follow their stated protocols, and
`benchmarks.run` writes the leaderboard with every participant's row (numbers, or why not)."""

import json

import numpy as np
import pytest
import torch

from benchmarks import run
from benchmarks.tasks import TASKS
from benchmarks.tasks.base import load_split
from benchmarks.tasks.depth import DepthAnswer
from benchmarks.tasks.grounding import GroundingAnswer, _iou
from benchmarks.tasks.pose import PoseAnswer
from benchmarks.tasks.recon import ReconAnswer
from common.synthetic import generate_split



@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate_split(root, "train", scenes=2, views=8, size=64, seed=0, progress=False)
    generate_split(root, "test", scenes=2, views=8, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def data(root):
    return load_split(root, "test"), load_split(root, "train")


def test_items_are_fixed_and_the_same_for_every_call(data):
    test, _ = data
    for name, cls in TASKS.items():
        a, b = cls().items(test), cls().items(test)
        assert len(a) == len(b) > 0, name
        if name == "depth":
            assert all((x.query.pixels == y.query.pixels).all() for x, y in zip(a, b))
        if name == "grounding":
            assert all(torch.equal(x.query.candidates, y.query.candidates) for x, y in zip(a, b))


def test_depth_truth_is_perfect_and_the_metric_protocol_sees_scale(data):
    task = TASKS["depth"]()
    item = task.items(data[0])[0]
    gt = torch.from_numpy(item.truth.depth)
    perfect = task.score(item, DepthAnswer(depth=gt))
    d = item.truth.domain
    assert perfect[f"{d}_delta1"] == 1.0 and perfect[f"{d}_abs_rel"] < 1e-6
    assert perfect["pixel_delta1"] == 1.0
    doubled = task.score(item, DepthAnswer(depth=2 * gt))
    assert doubled[f"{d}_delta1"] == 0.0 and doubled[f"{d}_delta1_aligned"] == 1.0  # median alignment
    relative = task.score(item, DepthAnswer(depth=2 * gt, scale_free=True))
    assert f"{d}_delta1" not in relative and "pixel_delta1" not in relative
    px = task.score(item, DepthAnswer(at_pixels=item.truth.at_pixels * 1.5))
    assert set(px) == {"pixel_abs_rel", "pixel_delta1"} and px["pixel_abs_rel"] == pytest.approx(0.5)


def test_pose_truth_is_perfect_and_identity_fails(data):
    task = TASKS["pose"]()
    item = task.items(data[0])[0]
    gt = torch.from_numpy(item.truth)
    assert task.score(item, PoseAnswer(gt))["auc_30"] > 99
    # any world frame and scale: a similarity transform of the whole rig changes nothing
    S = torch.eye(4, dtype=torch.float64)
    S[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    scaled = gt @ S
    scaled[:, :3, 3] *= 3.0
    assert task.score(item, PoseAnswer(scaled))["rra_15"] == 100
    base = task.baselines(data[0], None)["identity-cameras"](item.query)
    assert task.score(item, base)["rta_15"] == 0
    half = task.score(item, PoseAnswer(gt, registered=np.array([True, True, False, False])))
    assert half["registered"] == 0.5 and half["rra_15"] == pytest.approx(100 / 6)


def test_recon_aligns_a_similarity_transform_and_penalises_noise(data):
    task = TASKS["recon"]()
    item = task.items(data[0])[0]
    pts = torch.from_numpy(item.truth.points)
    R = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    moved = 0.5 * pts @ R.T + torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64)
    good = task.score(item, ReconAnswer(moved))
    assert good["acc"] < 1e-3 and good["fscore"] > 0.99 and good["nc"] > 0.9
    noisy = task.score(item, ReconAnswer(pts + 0.2 * torch.randn_like(pts)))
    assert noisy["fscore"] < 0.5 and noisy["acc"] > 0.05


def test_grounding_best_candidate_beats_baselines(data):
    task = TASKS["grounding"]()
    items = [it for it in task.items(data[0]) if not it.query.multi]
    oracle = [
        GroundingAnswer([int(np.argmax([_iou(c, it.truth[0]) for c in it.query.candidates.numpy()]))])
        for it in items
    ]
    acc = np.mean([task.score(it, a)["acc@0.25"] for it, a in zip(items, oracle)])
    rand = task.baselines(data[0], None)["random-candidate"]
    base = np.mean([task.score(it, rand(it.query))["acc@0.25"] for it in items])
    assert acc > 0.9 and base < acc
    multi = [it for it in task.items(data[0]) if it.query.multi]
    if multi:
        assert set(task.score(multi[0], GroundingAnswer([]))) == {"f1@0.25", "f1@0.5"}


def test_qa_parsers():
    task = TASKS["qa"]()
    from benchmarks.tasks.base import Item
    from benchmarks.tasks.qa import QATruth

    item = Item(None, QATruth("2.00", 2.0))
    lenient = task.score(item, "about 2 m")
    assert lenient["qa_mra"] == 1.0 and lenient["qa_mra_vsibench"] == 0.0  # VSI-Bench reads "about"
    assert task.score(item, "2.0.")["qa_mra_vsibench"] == 1.0
    tagged = task.score(item, "<think>maybe 5</think><answer>2</answer>")
    assert (
        tagged["qa_mra_depthlm"] == 1.0
        and tagged["qa_mra_vsibench"] == 0.0
        and lenient["qa_mra_depthlm"] == 0.0
    )
    cat = task.score(Item(None, QATruth("the red box", None)), "Red box.")
    assert (
        cat["qa_em"] == 1.0 and cat["qa_accuracy"] == 1.0 and 0.5 < cat["qa_rouge_l"] < 1
    )  # ROUGE counts "the"


def test_run_writes_the_leaderboard_with_every_participant(root, tmp_path, monkeypatch):
    from benchmarks.tasks.base import Participant
    from benchmarks.tasks.recon import ReconTask

    monkeypatch.chdir(tmp_path)  # no trained runs here: the selected method is listed as unavailable
    monkeypatch.setattr(ReconTask, "participants", [*ReconTask.participants, Participant("nobody")])
    out = tmp_path / "lb"
    assert (
        run.main(
            [
                "--data",
                str(root),
                "--tasks",
                "depth,recon,qa",
                "--methods",
                "ivgt",
                "--bootstrap",
                "200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    board = json.loads(out.with_suffix(".json").read_text())
    depth = board["tasks"]["depth"]
    assert board["tasks"]["recon"]["methods"]["nobody"]["status"].startswith("not yet")  # no adapter
    assert depth["methods"]["g2vlm"]["status"] == "not selected"
    assert depth["methods"]["ivgt"]["status"].startswith("unavailable: no trained run")
    qa = board["tasks"]["qa"]["metrics"]
    assert (
        qa["qa_bleu4"]["majority-answer-per-type"]["ci95"][1]
        >= qa["qa_bleu4"]["majority-answer-per-type"]["value"]
    )
    assert depth["methods"]["train-median-depth"]["status"] == "ok"
    row = depth["metrics"]["indoor_delta1_aligned"]["train-median-depth"]
    assert row["ci95"][0] <= row["value"] <= row["ci95"][1]
    md = out.with_suffix(".md").read_text()
    assert "| *best trivial baseline* |" in md and "not yet" in md
    html = out.with_suffix(".html").read_text()
    figures = [f for t in board["tasks"].values() for f in t["figures"]]
    assert len(figures) == 4 and all((tmp_path / f["file"]).is_file() for f in figures)  # depth 2, recon 2
    assert html.count("<table>") == 3 and html.count("data:image/png;base64,") == 3 + len(figures)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "depth,nope"], "--tasks: unknown ['nope']"),
        (["--methods", "colmapx"], "--methods: unknown ['colmapx']"),
        (["--scenes", "-1"], "--scenes: expected >= 0"),
    ],
)
def test_run_bad_flags_one_line(args, message, root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--data", str(root), "--out", str(tmp_path / "lb"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "lb.json").exists()


def test_nvs_truth_is_perfect_and_baselines_answer(data):
    task = TASKS["nvs"]()
    item = task.items(data[0])[0]
    perfect = task.score(item, item.truth)
    assert perfect["ssim"] > 0.999 and perfect["psnr"] > 60
    base = task.baselines(data[0], None)
    near = task.score(item, base["nearest-input-view"](item.query))
    mean = task.score(item, base["mean-colour"](item.query))
    assert near["psnr"] < perfect["psnr"] and mean["psnr"] < perfect["psnr"]


def test_sim3_from_cameras_maps_targets_into_a_scaled_frame():
    from benchmarks.tasks.nvs import sim3_from_cameras
    from common.cameras import camera_centers

    g = torch.Generator().manual_seed(0)
    w2c = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    w2c[:, :3, 3] = torch.randn(5, 3, generator=g, dtype=torch.float64)
    # the same rig in a frame scaled by 0.5 and shifted: centres c' = 0.5 c + d
    d = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    pred = w2c.clone()
    pred[:, :3, 3] = -(0.5 * camera_centers(w2c) + d)
    s, R, t = sim3_from_cameras(pred, w2c)
    assert s == pytest.approx(2.0) and np.allclose(R, np.eye(3), atol=1e-8)


def test_physics_task_scores_truth_and_baselines(tmp_path):
    from benchmarks.methods import build
    from benchmarks.tasks.physics import PhysicsTask

    task = PhysicsTask(clip=tmp_path / "clip", size=(32, 40))
    items = task.items(None)  # the clip is written by endogsim's generator when absent (small: a quick test)
    kinds = [it.query.kind for it in items]
    assert kinds.count("E") == 2 and kinds.count("frame") == 8
    e = next(it for it in items if it.query.kind == "E")
    assert task.score(e, e.truth)["E_rel_error"] == 0 and task.score(e, 2 * e.truth)["E_rel_error"] == 1
    base = task.baselines(None, None)
    frame = next(it for it in items if it.query.kind == "frame")
    still = task.score(frame, base["last-fit-frame"](frame.query))
    assert still["future_psnr_endogaussian"] > still["future_psnr"]  # the masked-image variant inflates
    assert task.score(frame, base["constant-E-10kPa"](frame.query)) == {}
    prior = build("endogsim-prior")  # no refinement: one simulation of the clip
    prior.load()
    answers = prior.answer("physics", [it.query for it in items])
    scores = [task.score(it, a) for it, a in zip(items, answers)]
    assert all(0 <= s["E_rel_error"] < 10 for s in scores[:2]) and all(
        s["future_psnr"] > 10 for s in scores[2:]
    )


def test_mesh_panels_render_an_aligned_answer_like_the_truth(data):
    from benchmarks.figures import grid_mesh, mesh_panels

    item = TASKS["recon"]().items(data[0])[0]
    t = item.truth
    verts, faces = grid_mesh(t.points, t.valid)
    assert len(faces) > t.valid[:, 1:, 1:].sum()  # ~2 triangles per valid 2x2 block, skins dropped
    pts = torch.from_numpy(t.points)
    R = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    moved = 0.5 * pts @ R.T + torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64)
    as_mesh = ReconAnswer(moved, mesh=(0.5 * verts @ R.numpy().T + [3.0, 1.0, -2.0], faces))
    noisy = ReconAnswer(pts + 0.2 * torch.randn_like(pts))
    panels = dict(mesh_panels(t, {"moved": ReconAnswer(moved), "mesh": as_mesh, "noisy": noisy}, size=96))
    truth = panels["ground truth"]
    assert (truth < 1).mean() > 0.2  # the surface fills a good part of the view
    assert np.abs(panels["moved (point maps)"] - truth).mean() < 0.02
    assert np.abs(panels["mesh (mesh)"] - truth).mean() < 0.02
    moved_err = np.abs(panels["moved (point maps)"] - truth).mean()
    assert np.abs(panels["noisy (point maps)"] - truth).mean() > max(3 * moved_err, 0.03)
