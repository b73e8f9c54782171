
import json

import numpy as np
import pytest
import torch

from common.tests import kill_resume
from depthvlm.config import StageConfig, load_config
from depthvlm.train import freeze_for_stage, train_stage


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stage,frozen_prefixes", [(1, ("model.", "lm_head.")), (2, ("model.visual.",))])
def test_stage_leaves_frozen_parameters_bit_identical(tiny, scene_items, tmp_path, stage, frozen_prefixes):
    model, proc = tiny
    before = _snapshot(model)
    scfg = StageConfig(steps=2, lr=1e-2, batch_size=2)
    train_stage(model, proc, scene_items, scfg, stage, tmp_path, seed=0, checkpoint_every=100)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("depth_head.") for k in changed)
    assert not any(k.startswith(frozen_prefixes) for k in changed), sorted(changed)[:5]
    if stage == 2:  # the language model trains in stage 2
        assert any(k.startswith("model.language_model.") for k in changed)


def test_freeze_sets(tiny):
    model, _ = tiny
    assert all(n.startswith("depth_head.") for n in freeze_for_stage(model, 1))
    names = freeze_for_stage(model, 2)
    assert not any(n.startswith("model.visual.") for n in names) and any(n.startswith("lm_head") for n in names)
    for stage in (2, "text"):  # the tiny recipe's option: the random-weight encoder trains in stage 2
        names = freeze_for_stage(model, stage, train_vision=True)
        assert any(n.startswith("model.visual.") for n in names)
        assert any(n.startswith("depth_head.") for n in names) == (stage == 2)
    assert all(n.startswith("depth_head.") for n in freeze_for_stage(model, 1, train_vision=True))


def _train(scene_items, out, steps, resume=False, model=None):
    from depthvlm.model import build_model
    from depthvlm.tests.conftest import small_model_config

    if model is None:
        model, proc = build_model(small_model_config(), seed=0)
    else:
        model, proc = model
    train_stage(model, proc, scene_items, StageConfig(steps=steps, lr=1e-2, batch_size=2), 2, out, seed=0,
                resume=resume, checkpoint_every=1)
    return model


def test_resume_same_weights(scene_items, tmp_path):
    from depthvlm.model import build_model
    from depthvlm.tests.conftest import small_model_config

    full = _train(scene_items, tmp_path / "a", 2)
    # Interrupted run: 1 step (checkpoint at 1), then a fresh model resumes to 2.
    _train(scene_items, tmp_path / "b", 1)
    resumed = _train(scene_items, tmp_path / "b", 2, resume=True, model=build_model(small_model_config(), seed=0))
    # The resumed model starts from fresh weights: the checkpoint restores every trainable one.
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_resumed_after_a_kill_in_stage_2_reaches_the_same_weights_and_log(tmp_path):
    """`depthvlm.train` killed with SIGKILL in stage 2 after a checkpoint (and a step logged past
    it), then run with --resume: stage 2's final weights equal the uninterrupted run's bit for bit
    and metrics.jsonl (stage-qualified, steps from 0, no time field) has the same lines."""
    from common.synthetic import generate_split

    data = tmp_path / "data"
    for split in ("train", "test"):
        generate_split(data, split, scenes=2, views=2, size=64, seed=0, progress=False)
    args = ["-m", "depthvlm.train", f"data.root={data}", "data.focal=60", "data.max_size=64",
            "model.vision_hidden=32", "model.vision_mlp=64", "model.text_hidden=32", "model.text_layers=1",
            "model.text_heads=2", "model.text_kv_heads=1", "model.text_mlp=64", "model.head_features=16",
            "model.head_out_channels=[8, 8, 16, 16]", "train.checkpoint_every=4",
            "train.stage1={steps: 4, lr: 1.0e-3, warmup: 0.1, batch_size: 2, with_text: false}",
            "train.stage2={steps: 16, lr: 5.0e-4, warmup: 0.1, batch_size: 2}"]
    a, b = tmp_path / "a", tmp_path / "b"
    kill_resume.run([*args, f"out_dir={a}"], tmp_path / "a.log")
    step = kill_resume.kill_after_checkpoint(
        [*args, f"out_dir={b}"], b / "stage2" / "checkpoint" / "state.json", b / "metrics.jsonl",
        tmp_path / "b.log", past=lambda row, s: row["stage"] == 2 and row["step"] >= s)
    assert step in (4, 8, 12) and not (b / "stage2" / "final").exists()
    kill_resume.run([*args, f"out_dir={b}", "--resume"], tmp_path / "resume.log")
    kill_resume.assert_same_weights(a / "stage2" / "final" / "model.safetensors",
                                    b / "stage2" / "final" / "model.safetensors")
    rows = kill_resume.assert_same_log(a / "metrics.jsonl", b / "metrics.jsonl", time_keys=())
    assert [(r["stage"], r["step"]) for r in rows] == [(1, s) for s in range(4)] + [(2, s) for s in range(16)]


def test_tiny_model_overfits_one_depth_map(tiny, scene_items, tmp_path):
    from common.metrics import depth_metrics
    from depthvlm.data import DEPTH_PROMPT

    model, proc = tiny
    item = [scene_items[0]]
    batch = proc([item[0].image], [DEPTH_PROMPT])

    def abs_rel():
        with torch.no_grad():
            pred = model(**batch).depth[0].numpy()
        return depth_metrics(pred, item[0].depth.numpy())["abs_rel"]

    before = abs_rel()
    train_stage(model, proc, item, StageConfig(steps=60, lr=5e-3, batch_size=1, warmup=0.05), 1, tmp_path,
                seed=0, checkpoint_every=1000)
    after = abs_rel()
    assert after < 0.15 and after < 0.25 * before, (before, after)


def test_items_are_at_the_canonical_focal_with_exact_depth(scene_items):
    for it in scene_items:
        assert float(it.K[0, 0]) == 60.0 and float(it.K[1, 1]) == 60.0
        H, W = it.image.shape[-2:]
        assert H % 16 == 0 and W % 16 == 0 and H <= 64 and W <= 64
        assert it.depth.shape == (H, W)
    assert {it.domain for it in scene_items} == {"indoor", "outdoor"}
    assert any(it.questions for it in scene_items)


def test_unified_depth_values_come_from_the_original_map():
    from common.synthetic import generate_scene
    from depthvlm.data import to_vlm_items

    sample, _ = generate_scene(seed=5, domain="indoor", num_views=1, size=64)
    item = to_vlm_items(sample, focal=80.0, factor=16)[0]
    original = set(np.round(sample.depth[0].numpy().ravel(), 6))
    assert set(np.round(item.depth.numpy().ravel(), 6)) <= original | {0.0}  # nearest: no blending


def test_image_without_intrinsics_is_an_error(tmp_path):
    from PIL import Image

    from common.datasets import Sample, read_image_folder
    from depthvlm.data import to_vlm_items

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    s = read_image_folder(tmp_path)
    s = Sample(images=s.images, K=s.K, w2c=s.w2c, depth=torch.ones(1, 32, 48), annotations={**s.annotations, "domain": "indoor"},
               scene_id=str(tmp_path))
    with pytest.raises(ValueError, match="no intrinsics"):
        to_vlm_items(s, focal=50.0, factor=16)
    assert len(to_vlm_items(s, focal=50.0, factor=16, require_intrinsics=False)) == 1


def test_config_typo_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  stage1: {stpes: 3}\n")
    with pytest.raises(ValueError, match="stpes"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="bogus"):
        load_config(None, ["data.bogus=1"])
    assert load_config(None, ["train.stage2.depth_weight=0.5"]).train.stage2.depth_weight == 0.5


@pytest.mark.parametrize("source", ["nyu_folder", "kitti_val", "scannet"])
def test_public_dataset_layouts_become_benchmark_items(tmp_path, source):
    """The benchmark reads NYU / KITTI / ScanNet layouts through `common`'s readers: metric depth
    values survive focal unification (nearest) and every item fits the token grid."""
    from common.tests import datasets_fixtures as fx
    from depthvlm.data import build_items

    root = tmp_path / source
    if source == "nyu_folder":  # NYU's own K belongs to 480 x 640 images
        fx.rgb(root / "rgb" / "0001.png", 480, 640)
        depth = np.zeros((480, 640))
        depth[200:280, 300:340] = 1500  # 1.5 m at depth_scale 1000
        fx.u16(root / "depth" / "0001.png", depth)
        focal, domain, value = 100.0, "indoor", 1.5
    elif source == "kitti_val":
        drive, frame = "2011_09_26_drive_0002_sync", f"{5:010d}"
        fx.rgb(root / "image" / f"{drive}_image_{frame}_image_02.png", 40, 120)
        depth = np.zeros((40, 120))
        depth[10:30, 40:80] = 256 * 10  # 10 m at KITTI's 1/256 m
        fx.u16(root / "groundtruth_depth" / f"{drive}_groundtruth_depth_{frame}_image_02.png", depth)
        fx.matrix_txt(root / "intrinsics" / f"{drive}_image_{frame}_image_02.txt",
                      np.array([[60.0, 0, 60], [0, 60.0, 20], [0, 0, 1]]))
        focal, domain, value = 60.0, "outdoor", 10.0
    else:
        scene = root / "scene0000_00"
        fx.rgb(scene / "color" / "0.jpg", 24, 32)
        depth = np.zeros((24, 32))
        depth[8:16, 8:24] = 2000
        fx.u16(scene / "depth" / "0.png", depth)
        fx.matrix_txt(scene / "pose" / "0.txt", np.eye(4))
        K = np.array([[30.0, 0, 16, 0], [0, 30.0, 12, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        fx.matrix_txt(scene / "intrinsic" / "intrinsic_color.txt", K)
        fx.matrix_txt(scene / "intrinsic" / "intrinsic_depth.txt", K)
        focal, domain, value = 30.0, "indoor", 2.0
    cfg = load_config(None, [f"data.source={source}", f"data.root={root}", f"data.focal={focal}",
                             f"data.domain={domain}"]).data
    items = build_items(cfg, "test", factor=16)
    assert len(items) == 1 and items[0].domain == domain
    item = items[0]
    assert item.image.shape[-2] % 16 == 0 and item.image.shape[-1] % 16 == 0
    assert item.K[0, 0] == pytest.approx(focal) and item.depth.shape == item.image.shape[-2:]
    valid = item.depth[item.depth > 0]
    assert len(valid) > 0 and torch.allclose(valid, torch.tensor(value), atol=1e-3)  # metric, unchanged


@pytest.mark.parametrize("stage", [1, 2])
def test_two_processes_follow_one_with_twice_the_batch(tmp_path, stage):
    """torchrun with 2 CPU processes (gloo) at batch 2 each (stage 2: depth on 1 image each), in one
    stage (the other has 0 steps): the log and trained weights of one process at batch 4 (depth on 2), far closer than those of one process at
    batch 2; only the main process writes."""
    from safetensors.torch import load_file

    from common.synthetic import generate_split
    from common.tests import two_processes

    data = tmp_path / "data"
    for split in ("train", "test"):
        generate_split(data, split, scenes=3, views=2, size=64, seed=0, progress=False)
    steps = {1: 4, 2: 0} if stage == 1 else {1: 0, 2: 4}
    args = [f"data.root={data}", "data.focal=60", "data.max_size=64", "model.vision_hidden=32",
            "model.vision_mlp=64", "model.text_hidden=32", "model.text_layers=1", "model.text_heads=2", "model.text_kv_heads=1",
            "model.text_mlp=64", "model.head_features=16", "model.head_out_channels=[8, 8, 16, 16]",
            "train.checkpoint_every=2", "train.stage1.with_text=false",
            *[f"train.stage{s}={{steps: {n}, lr: 3.0e-3, warmup: 0.1}}" for s, n in steps.items()]]
    batch = f"train.stage{stage}.batch_size"
    outs = {}
    for name, b in (("one", 4), ("half", 2)):
        outs[name] = tmp_path / name
        kill_resume.run(["-m", "depthvlm.train", *args, f"{batch}={b}", f"train.stage2.depth_images={b // 2}",
                         f"out_dir={outs[name]}"], tmp_path / f"{name}.log")
    outs["two"] = two_processes.run("depthvlm.train", [*args, f"{batch}=2", "train.stage2.depth_images=1"],
                                    "out_dir", tmp_path / "two", tmp_path / "two.log")
    files = {n: sorted(str(p.relative_to(d)) for p in d.rglob("*")) for n, d in outs.items()}
    assert files["two"] == files["one"], (files["two"], files["one"])
    logs = {n: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            for n, d in outs.items()}
    assert [(r["stage"], r["step"]) for r in logs["two"]] == [(stage, s) for s in range(4)]
    for a, b in zip(logs["one"], logs["two"]):
        for key in ("loss", "depth_loss", "text_loss"):  # text_loss is None in stage 1
            assert a[key] == (None if b[key] is None else pytest.approx(b[key], rel=1e-4)), (key, a, b)
    w = {n: load_file(str(d / f"stage{stage}" / "final" / "model.safetensors")) for n, d in outs.items()}
    diff = max((w["one"][k] - w["two"][k]).abs().max().item() for k in w["one"])
    other = max((w["one"][k] - w["half"][k]).abs().max().item() for k in w["one"])
    print(f"depthvlm stage {stage} weights: 2 x 2 vs 1 x 4 {diff:.2e}, 1 x 2 vs 1 x 4 {other:.2e}")
    assert diff < 1e-4 and diff < other / 50, (diff, other)


def test_questions_name_only_objects_in_the_image_the_model_sees():
    from dataclasses import replace

    from common.synthetic import generate_scene
    from depthvlm.data import to_vlm_items

    sample, _ = generate_scene(seed=3, domain="indoor", num_views=1, size=64)
    obj = sample.annotations["objects"][0]
    name = f"the {obj['color_name']} {obj['category']}"
    instances = sample.instances.clone()
    instances[instances == obj["id"]] = 0
    instances[0, 20:40, 0:6] = obj["id"]  # the object only in a strip at the left edge (3% of the view)
    sample = replace(sample, instances=instances)
    focal = float(sample.K[0, 0, 0])

    def named(max_size):
        (item,) = to_vlm_items(sample, focal=focal, factor=16, max_size=max_size, questions_per_view=60)
        return {ref.split(" at ")[0] for q in item.questions for ref in q["names"]}

    assert name in named(0)  # the whole view: asked about
    assert named(32) and name not in named(32)  # a centre crop of 32 px cuts the strip out


def test_closer_answers_the_option_nearer_the_camera():
    from common.cameras import transform_points
    from common.synthetic import generate_scene
    from depthvlm.data import to_vlm_items

    sample, _ = generate_scene(seed=3, domain="indoor", num_views=1, size=64)
    (item,) = to_vlm_items(sample, focal=float(sample.K[0, 0, 0]), factor=16, max_size=0, questions_per_view=30)
    objects = {f"the {o['color_name']} {o['category']}": o for o in sample.annotations["objects"]}
    centres = torch.tensor([o["center"] for o in objects.values()], dtype=torch.float64)
    z = dict(zip(objects, transform_points(sample.w2c[0].double(), centres)[:, 2].tolist()))
    closer = [q for q in item.questions if q["type"] == "closer"]
    assert closer and {q["answer"] for q in closer} <= {"A", "B"}
    for q in closer:
        (na, _), (nb, _) = (n.split(" at ") for n in q["names"])
        assert q["answer"] == ("A" if z[na] < z[nb] else "B")


def test_refer_locates_an_object_at_the_centre_of_its_pixels():
    from depthvlm.data import refer

    instances = torch.zeros(10, 20, dtype=torch.long)
    instances[2:4, 4:8] = 7  # pixel centres x 4.5..7.5, y 2.5..3.5
    obj = {"id": 7, "color_name": "red", "category": "box"}
    assert refer(obj, instances) == "the red box at (300, 300)"
