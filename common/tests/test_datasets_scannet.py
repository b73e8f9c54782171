"""ScanNet SensReader exports and the ScanRefer / Multi3DRefer / ScanQA / SQA3D annotation readers."""

import json

import numpy as np
import pytest
import torch

from common.datasets import DatasetError, Sample
from common.datasets.scannet import (
    ScanNetDataset,
    attach_annotations,
    read_multi3drefer,
    read_scannet_scene,
    read_scanqa,
    read_scanrefer,
    read_sqa3d,
)
from common.tests import datasets_fixtures as fx

K_COLOR = np.array([[20.0, 0, 8.0, 0], [0, 20.0, 6.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # 16x12 colour
K_DEPTH = np.array([[10.0, 0, 4.0, 0], [0, 10.5, 3.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # 8x6 depth


def make_scene(root, name="scene0000_00", n=4, bad_pose=2):
    scene = root / name
    for i in range(n):
        fx.rgb(scene / "color" / f"{i}.jpg", 12, 16, value=100 + i)
        depth = np.zeros((6, 8))
        depth[1, 2] = 1500
        fx.u16(scene / "depth" / f"{i}.png", depth)
        pose = fx.c2w_example(i)
        if i == bad_pose:
            pose[:] = -np.inf  # ScanNet's "tracking lost"
        fx.matrix_txt(scene / "pose" / f"{i}.txt", pose)
    fx.matrix_txt(scene / "intrinsic" / "intrinsic_color.txt", K_COLOR)
    fx.matrix_txt(scene / "intrinsic" / "intrinsic_depth.txt", K_DEPTH)
    return scene


def test_scene_values_and_skipped_pose(tmp_path):
    scene = make_scene(tmp_path)
    with pytest.warns(UserWarning, match="non-finite poses"):
        s = read_scannet_scene(scene)
    assert s.view_names == ["0", "1", "3"] and s.annotations["skipped_frames"] == ["2"]
    assert s.images.shape == (3, 3, 6, 8)  # colour resized to the depth size
    assert s.depth[0, 1, 2] == pytest.approx(1.5) and s.valid[0, 1, 2] and not s.valid[0, 0, 0]
    assert torch.allclose(s.K[0], torch.tensor([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]]))
    w2c_times_c2w = s.w2c[2].double() @ torch.from_numpy(fx.c2w_example(3))  # view 2 is frame 3
    assert torch.allclose(w2c_times_c2w, torch.eye(4, dtype=torch.float64), atol=1e-6)
    assert s.images[1].mean().item() == pytest.approx(101 / 255, abs=3 / 255)  # JPEG, constant colour
    sd = read_scannet_scene(scene, frames=[0, 1], intrinsics="depth")
    assert sd.K[0, 1, 1] == pytest.approx(10.5) and sd.view_names == ["0", "1"]
    assert read_scannet_scene(scene, stride=3).view_names == ["0", "3"]


def test_dataset_windows_and_annotations(tmp_path):
    make_scene(tmp_path)
    refs = {"scene0000_00": [{"object_id": 1}]}
    with pytest.warns(UserWarning, match="skipped 1 frames"):
        ds = ScanNetDataset(tmp_path, num_views=2, annotations={"scanrefer": refs})
    assert len(ds) == 1 and ds.skipped_frames == {"scene0000_00": [2]}  # frames 0, 1, 3 -> one window
    item = ds[0]
    assert item.view_names == ["0", "1"] and item.annotations["scanrefer"] == [{"object_id": 1}]


@pytest.mark.parametrize(
    "breakage, name",
    [
        (lambda s: fx.u16(s / "depth" / "1.png", np.zeros((7, 8))), "1.png"),  # wrong size
        (lambda s: fx.corrupt(s / "color" / "3.jpg"), "3.jpg"),
        (lambda s: (s / "pose" / "1.txt").unlink(), "1.txt"),
        (lambda s: (s / "intrinsic" / "intrinsic_color.txt").write_text("fx fy\n"), "intrinsic_color.txt"),
        (lambda s: (s / "intrinsic" / "intrinsic_depth.txt").write_text("nan " * 16), "intrinsic_depth.txt"),
    ],
)
def test_scene_bad_input(tmp_path, breakage, name):
    scene = make_scene(tmp_path, bad_pose=-1)
    breakage(scene)
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")):
        read_scannet_scene(scene)


def _json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_scanrefer_and_multi3drefer(tmp_path):
    p = _json(tmp_path / "ScanRefer_filtered_val.json", [
        {"scene_id": "scene0000_00", "object_id": "5", "object_name": "chair", "ann_id": "0",
         "description": "a chair", "token": []},
        {"scene_id": "scene0001_00", "object_id": "2", "object_name": "table", "ann_id": "1",
         "description": "a table"},
    ])
    refs = read_scanrefer(p)
    assert refs["scene0000_00"][0]["object_id"] == 5 and refs["scene0000_00"][0]["token"] == []
    m = _json(tmp_path / "multi3drefer_val.json", [
        {"scene_id": "scene0000_00", "object_ids": ["1", 2], "ann_id": 0, "description": "two",
         "eval_type": "mt"},
        {"scene_id": "scene0000_00", "object_ids": [], "ann_id": 1, "description": "none", "eval_type": "zt"},
    ])
    multi = read_multi3drefer(m)
    assert [r["object_ids"] for r in multi["scene0000_00"]] == [[1, 2], []]
    s = attach_annotations(_tiny_sample("scene0000_00"), scanrefer=refs, multi3drefer=multi)
    assert len(s.annotations["scanrefer"]) == 1 and len(s.annotations["multi3drefer"]) == 2


def test_scanqa_and_sqa3d(tmp_path):
    qa = _json(tmp_path / "ScanQA_v1.0_val.json", [
        {"scene_id": "scene0000_00", "question_id": "q0", "question": "what?", "answers": ["a chair"],
         "object_ids": [3], "object_names": ["chair"]},
    ])
    assert read_scanqa(qa)["scene0000_00"][0]["answers"] == ["a chair"]
    test_qa = _json(tmp_path / "ScanQA_v1.0_test_wo_obj.json", [{"scene_id": "s", "question_id": "q",
                                                                 "question": "?"}])
    assert "answers" not in read_scanqa(test_qa, answers_required=False)["s"][0]
    q = _json(tmp_path / "questions.json", {"questions": [
        {"scene_id": "scene0000_00", "question_id": 7, "situation": "I sit.", "question": "left?"}]})
    a = _json(tmp_path / "annotations.json", {"annotations": [
        {"question_id": 7, "answers": [{"answer": "chair", "answer_id": 1}], "position": {"x": 1}}]})
    rec = read_sqa3d(q, a)["scene0000_00"][0]
    assert rec["answers"] == ["chair"] and rec["situation"] == "I sit." and rec["position"] == {"x": 1}
    _json(a, {"annotations": []})
    with pytest.raises(DatasetError, match=r"annotations\.json.*question_id 7"):
        read_sqa3d(q, a)


@pytest.mark.parametrize(
    "reader, record, key",
    [
        (read_scanrefer, {"scene_id": "s", "object_id": 1, "object_name": "c", "ann_id": 0}, "description"),
        (read_multi3drefer, {"scene_id": "s", "object_ids": [], "ann_id": 0, "description": ""}, "eval_type"),
        (read_scanqa, {"scene_id": "s", "question_id": "q", "answers": []}, "question"),
    ],
)
def test_annotation_missing_key(tmp_path, reader, record, key):
    good = {"scene_id": "s", "object_id": 1, "object_ids": [], "object_name": "c", "ann_id": 0,
            "description": "d", "eval_type": "st", "question_id": "q", "question": "?", "answers": []}
    p = _json(tmp_path / "ann.json", [good, record])
    with pytest.raises(DatasetError, match=rf"ann\.json: record 1: missing key '{key}'"):
        reader(p)


def test_sqa3d_missing_key(tmp_path):
    q = _json(tmp_path / "q.json", {"questions": [{"scene_id": "s", "question_id": 1, "question": "?"}]})
    with pytest.raises(DatasetError, match=r"q\.json: record 0: missing key 'situation'"):
        read_sqa3d(q)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DatasetError, match=r"bad\.json.*not valid JSON"):
        read_scanrefer(tmp_path / "bad.json")


def _tiny_sample(scene_id):
    return Sample(images=torch.zeros(1, 3, 2, 2), K=torch.eye(3)[None], w2c=torch.eye(4)[None],
                  scene_id=scene_id)


def test_axis_alignment_meta_file(tmp_path):
    from common.datasets import read_scannet_axis_alignment

    scene = tmp_path / "scene0002_00"
    scene.mkdir()
    align = np.arange(16, dtype=float).reshape(4, 4)
    (scene / "scene0002_00.txt").write_text("colorHeight = 968\naxisAlignment = " + " ".join(map(str, align.flatten())) + "\n")
    assert np.array_equal(read_scannet_axis_alignment(scene), align)
    (scene / "scene0002_00.txt").write_text("colorHeight = 968\n")  # test scans have none
    with pytest.warns(UserWarning, match="no axisAlignment line"):
        assert np.array_equal(read_scannet_axis_alignment(scene), np.eye(4))
    (scene / "scene0002_00.txt").write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(DatasetError, match="axisAlignment: expected 16 finite numbers"):
        read_scannet_axis_alignment(scene)
    with pytest.raises(DatasetError, match="scene meta file not found"):
        read_scannet_axis_alignment(tmp_path / "scene0003_00")
