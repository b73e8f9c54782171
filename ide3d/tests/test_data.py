"""Scenes and queries from synthetic scenes, ScanNet layouts and Video-3D LLM records; bad input."""

import json

import numpy as np
import pytest
import torch

from common.datasets import DatasetError, read_scene
from common.metrics import box_iou_3d_axis_aligned
from common.tests import datasets_fixtures as fx
from ide3d.data import collate, items, load_scenes
from ide3d.processing import qa_prompt
from ide3d.tests.conftest import make_cfg


@pytest.fixture(scope="module")
def synthetic(data_root, _tiny):
    cfg = make_cfg(data_root, "unused", "unused")
    return cfg, load_scenes(cfg.data, "train", processor=_tiny[1])


def test_synthetic_candidates_and_queries(synthetic):
    cfg, scenes = synthetic
    for s in scenes:
        objects = {o["id"]: o for o in s.objects}
        assert len(s.boxes) == len(objects) + cfg.data.distractors
        kinds = {q.dataset + ":" + q.qtype for q in s.queries}
        assert {"scanrefer:unique", "scanrefer:multiple"} & kinds and "multi3drefer:zt_w_d" in kinds
        for q in s.queries:
            if q.kind == "qa":
                assert q.answers and q.qtype in cfg.data.qa_types
                continue
            assert len(q.targets) == len(q.target_boxes)
            for t, gt in zip(q.targets, q.target_boxes):  # the labelled candidate is the jittered target
                assert (
                    box_iou_3d_axis_aligned(s.boxes[t, :3].numpy(), s.boxes[t, 3:].numpy(), gt[:3], gt[3:])
                    > 0.35
                )
            if q.qtype.startswith("zt"):  # zero-target: a colour no object has
                colour = q.text.split()[1]
                assert q.targets == [] and all(o["color_name"] != colour for o in objects.values())
        assert s.inputs.membership.shape[:2] == (len(s.boxes), 4)
    # Some targets own patches (object features come from pixels, not only from the box centre).
    owned = [
        bool(s.inputs.membership[t].any()) for s in scenes for q in s.queries if q.targets for t in q.targets
    ]
    assert np.mean(owned) > 0.5


def test_views_are_renumbered_to_frames(data_root, _tiny):
    cfg = make_cfg(data_root, "unused", "unused", ["data.frames=2"])  # views 0 and 3 of 4
    scenes = load_scenes(cfg.data, "train")
    raw = read_scene(data_root / "train" / scenes[0].scene_id, load=()).annotations
    assert scenes[0].frame_ids == [0, 3]
    texts = [q.text for s in scenes for q in s.queries if " view " in q.text]
    assert all(t.split(" view ")[1][0] in "01" for t in texts)
    in_view = [r for r in raw["referring"] if r["view"] is not None]
    kept = [q for q in scenes[0].queries if q.kind == "ground" and " view " in q.text]
    assert len({q.qid for q in kept}) == sum(r["view"] in (0, 3) for r in in_view)


def test_collate_encodes_each_scene_once(synthetic, _tiny):
    _, scenes = synthetic
    chosen = items(scenes)[:3] + items(scenes)[-2:]
    batch = collate(scenes, chosen, _tiny[1])
    assert batch["pixel_values_videos"].shape[0] == 2 and batch["video_index"].tolist() == [0, 0, 0, 1, 1]
    assert batch["input_ids"].shape[0] == 5 and len(batch["membership"]) == 2


def test_bad_synthetic_input(data_root, tmp_path, _tiny):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(data_root / "train", root / "train")
    scene = sorted(p for p in (root / "train").iterdir() if p.is_dir())[0]
    meta = json.loads((scene / "scene.json").read_text())
    meta["annotations"]["poses_known"] = False
    (scene / "scene.json").write_text(json.dumps(meta))
    cfg = make_cfg(root, "unused", "unused")
    with pytest.raises(ValueError, match=r"scene.json: annotations.poses_known is false.*cross-view"):
        load_scenes(cfg.data, "train")
    frames = [torch.rand(3, 32, 32), torch.rand(3, 32, 40)]
    with pytest.raises(ValueError, match="frame 1 is 32x40, frame 0 is 32x32"):
        _tiny[1]([frames], [qa_prompt("How many?")])


# -------------------------------------------------------------------------------------------------
# ScanNet and Video-3D LLM layouts
# -------------------------------------------------------------------------------------------------

ALIGN = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, -2.0], [0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.0, 1.0]])
BOXES = [[0.0, 0.0, 0.5, 1.0, 1.0, 1.0], [2.0, 1.0, 0.5, 0.5, 0.5, 1.0], [-1.0, 2.0, 0.3, 0.6, 0.6, 0.6]]


def scannet_layout(root):
    """A 4-frame SensReader export, its meta file, box JSONs and every annotation layout."""
    scene = root / "scans" / "scene0001_00"
    for i in range(4):
        fx.rgb(scene / "color" / f"{i}.jpg", 12, 16, seed=i)
        fx.u16(scene / "depth" / f"{i}.png", np.full((6, 8), 2000))
        fx.matrix_txt(scene / "pose" / f"{i}.txt", fx.c2w_example(i))
    fx.matrix_txt(
        scene / "intrinsic" / "intrinsic_color.txt",
        np.array([[20.0, 0, 8, 0], [0, 20, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    )
    fx.matrix_txt(
        scene / "intrinsic" / "intrinsic_depth.txt",
        np.array([[10.0, 0, 4, 0], [0, 10, 3, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    )
    (scene / "scene0001_00.txt").write_text(
        "axisAlignment = " + " ".join(str(v) for v in ALIGN.flatten()) + "\nnumColorFrames = 4\n"
    )
    (root / "gt_box.json").write_text(json.dumps({"scannet/scene0001_00": BOXES}))
    (root / "pred_box.json").write_text(
        json.dumps({"scannet/scene0001_00": [[0.1, 0.0, 0.5, 1.0, 1.0, 1.0]]})
    )
    (root / "scanrefer.json").write_text(
        json.dumps(
            [
                {
                    "scene_id": "scene0001_00",
                    "object_id": "1",
                    "object_name": "chair",
                    "ann_id": "0",
                    "description": "the chair by the wall.",
                },
                {
                    "scene_id": "scene0001_00",
                    "object_id": "0",
                    "object_name": "table",
                    "ann_id": "0",
                    "description": "a table.",
                },
                {
                    "scene_id": "scene0001_00",
                    "object_id": "2",
                    "object_name": "table",
                    "ann_id": "1",
                    "description": "the small table.",
                },
            ]
        )
    )
    (root / "multi3drefer.json").write_text(
        json.dumps(
            [
                {
                    "scene_id": "scene0001_00",
                    "object_ids": [0, 2],
                    "ann_id": 3,
                    "description": "both tables",
                    "eval_type": "mt",
                },
                {
                    "scene_id": "scene0001_00",
                    "object_ids": [],
                    "ann_id": 4,
                    "description": "the piano",
                    "eval_type": "zt_wo_d",
                },
            ]
        )
    )
    (root / "scanqa.json").write_text(
        json.dumps(
            [
                {
                    "scene_id": "scene0001_00",
                    "question_id": "train-scene0001-0",
                    "question": "What color is the chair?",
                    "answers": ["brown", "dark brown"],
                    "object_ids": [1],
                }
            ]
        )
    )
    (root / "sqa_q.json").write_text(
        json.dumps(
            {
                "questions": [
                    {
                        "scene_id": "scene0001_00",
                        "question_id": 7,
                        "situation": "I sit on the chair.",
                        "question": "What is in front of me?",
                    }
                ]
            }
        )
    )
    (root / "sqa_a.json").write_text(
        json.dumps({"annotations": [{"question_id": 7, "answers": [{"answer": "table"}]}]})
    )
    (root / "records.json").write_text(
        json.dumps(
            [
                {
                    "id": 0,
                    "video": "scannet/scene0001_00",
                    "box": BOXES[1],
                    "conversations": [
                        {
                            "from": "human",
                            "value": "<image>Identify the object according to the following description."
                            "\nThe chair by the wall.",
                        },
                        {"from": "gpt", "value": "<ground>"},
                    ],
                    "metadata": {
                        "dataset": "scanrefer",
                        "question_type": "unique",
                        "ann_id": 0,
                        "object_id": 1,
                    },
                },
                {
                    "id": "scanqa_train-scene0001-0_0",
                    "video": "scannet/scene0001_00",
                    "conversations": [
                        {
                            "from": "human",
                            "value": "<image> What color is the chair? Answer the question simply.",
                        },
                        {"from": "gpt", "value": "brown"},
                    ],
                    "metadata": {"dataset": "scanQA", "question_type": "unknow"},
                },
            ]
        )
    )
    return root


def scannet_cfg(root, extra=()):
    return make_cfg(
        root,
        "unused",
        "unused",
        [
            "data.source=scannet",
            f"data.scannet_root={root / 'scans'}",
            f"data.boxes={root / 'gt_box.json'}",
            f"data.scanrefer={root / 'scanrefer.json'}",
            f"data.multi3drefer={root / 'multi3drefer.json'}",
            f"data.scanqa={root / 'scanqa.json'}",
            f"data.sqa3d_questions={root / 'sqa_q.json'}",
            f"data.sqa3d_annotations={root / 'sqa_a.json'}",
            *extra,
        ],
    )


def test_scannet_annotations_feed_the_same_scenes(tmp_path, _tiny):
    root = scannet_layout(tmp_path)
    cfg = scannet_cfg(root)
    (scene,) = load_scenes(cfg.data, "train", processor=_tiny[1])
    assert scene.frames.shape == (4, 3, 6, 8) and scene.boxes.shape == (3, 6)
    raw_w2c = torch.from_numpy(np.linalg.inv(fx.c2w_example(0))).float()
    assert torch.allclose(scene.w2c[0], raw_w2c @ torch.from_numpy(np.linalg.inv(ALIGN)).float(), atol=1e-5)
    by = {(q.dataset, q.text): q for q in scene.queries}
    chair = by[("scanrefer", "the chair by the wall.")]
    assert chair.targets == [1] and chair.qtype == "unique" and np.allclose(chair.target_boxes[0], BOXES[1])
    assert by[("scanrefer", "a table.")].qtype == "multiple"
    assert (
        by[("multi3drefer", "both tables")].targets == [0, 2]
        and by[("multi3drefer", "the piano")].targets == []
    )
    assert by[("scanqa", "What color is the chair?")].answers == ["brown", "dark brown"]
    sqa = [q for q in scene.queries if q.dataset == "sqa3d"][0]
    assert sqa.answers == ["table"] and sqa.qtype == "what" and sqa.prompt.startswith("I sit on the chair.")
    assert scene.inputs.membership.shape[0] == 3
    batch = collate([scene], items([scene]), _tiny[1])
    assert batch["input_ids"].shape[0] == len(scene.queries)


def test_video3dllm_records_and_proposals(tmp_path):
    root = scannet_layout(tmp_path)
    cfg = scannet_cfg(root, ["data.source=video3dllm", f"data.records={root / 'records.json'}"])
    (scene,) = load_scenes(cfg.data, "train")
    ground, qa = scene.queries
    assert ground.targets == [1] and ground.dataset == "scanrefer" and ground.qtype == "unique"
    assert ground.prompt.startswith("Identify the object") and np.allclose(ground.target_boxes[0], BOXES[1])
    assert qa.answers == ["brown"] and qa.dataset == "scanqa"
    # On proposals, a query is scored against the ground-truth boxes and never trained on.
    cfg = scannet_cfg(root, [f"data.boxes={root / 'pred_box.json'}", f"data.gt_boxes={root / 'gt_box.json'}"])
    (scene,) = load_scenes(cfg.data, "val")
    assert scene.boxes.shape == (1, 6)
    chair = next(q for q in scene.queries if q.text == "the chair by the wall.")
    assert chair.targets is None and np.allclose(chair.target_boxes[0], BOXES[1])
    assert all(scene.queries[j].kind == "qa" for _, j in items([scene], trainable=True))


def test_malformed_scannet_inputs_are_named(tmp_path):
    root = scannet_layout(tmp_path)
    (root / "bad_box.json").write_text(json.dumps({"scannet/scene0001_00": [[0, 0, 0, 1, 1]]}))
    with pytest.raises(DatasetError, match=r"bad_box.json: scene 'scannet/scene0001_00': expected a list"):
        load_scenes(scannet_cfg(root, [f"data.boxes={root / 'bad_box.json'}"]).data, "train")
    refs = json.loads((root / "scanrefer.json").read_text())
    refs[0]["object_id"] = "9"
    (root / "scanrefer.json").write_text(json.dumps(refs))
    with pytest.raises(
        DatasetError, match=r"scanrefer.json: scene scene0001_00 record 0: object id 9 has no box"
    ):
        load_scenes(scannet_cfg(root).data, "train")
    (root / "records.json").write_text(json.dumps([{"video": "scannet/scene0001_00"}]))
    with pytest.raises(DatasetError, match=r"records.json: record 0: missing or malformed field"):
        load_scenes(
            scannet_cfg(root, ["data.source=video3dllm", f"data.records={root / 'records.json'}"]).data,
            "train",
        )
