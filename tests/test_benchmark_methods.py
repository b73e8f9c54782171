"""Each adapter answers its tasks' protocols with the shapes and types the tasks score (random-weight
tiny models saved to a folder, loaded the way a trained run is)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.methods import Unavailable, build
from benchmarks.tasks import TASKS
from benchmarks.tasks.base import load_split
from common.synthetic import generate_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_methods")
    generate_split(root, "test", scenes=1, views=8, size=64, seed=0, progress=False)
    return load_split(root, "test")


def _score_all(method, test_split, tasks):
    out = {}
    for name in tasks:
        task = TASKS[name]()
        items = task.items(test_split)[:3]
        answers = method.answer(name, [it.query for it in items])
        assert len(answers) == len(items)
        out[name] = [task.score(it, a) for it, a in zip(items, answers)]
    return out


def test_g2vlm_adapter(tmp_path, test_split):
    from g2vlm.config import load_config
    from g2vlm.model import build_model

    cfg = load_config(ROOT / "g2vlm/configs/tiny.yaml", ["model.max_tokens=64"])
    build_model(cfg.model, seed=0).save_pretrained(tmp_path / "g2vlm")
    method = build("g2vlm", checkpoint=tmp_path / "g2vlm")
    method.load()
    scores = _score_all(method, test_split, ["depth", "pose", "recon", "grounding", "qa"])
    assert "indoor_delta1" in scores["depth"][0]  # metric depth: scored without alignment
    assert 0 <= scores["pose"][0]["auc_30"] <= 100 and scores["recon"][0]["acc"] >= 0


def test_ivgt_adapters(tmp_path, test_split):
    from ivgt.config import load_config
    from ivgt.model import IVGT

    cfg = load_config(ROOT / "ivgt/configs/tiny.yaml")
    IVGT.from_model_config(cfg.model).save_pretrained(tmp_path / "ivgt")
    scores = {}
    for name, tasks in (("ivgt", ["depth", "pose", "nvs"]), ("ivgt-explicit", ["depth", "recon"])):
        method = build(name, checkpoint=tmp_path / "ivgt")
        method.load()
        scores[name] = _score_all(method, test_split, tasks)
        d = scores[name]["depth"][0]
        assert any(k.endswith("_aligned") for k in d) and not any(
            k.endswith("_delta1") for k in d
        )  # scale-free
    assert 0 < scores["ivgt"]["nvs"][0]["psnr"] < 60 and scores["ivgt-explicit"]["recon"][0]["scored"] == 1
    assert set(build("ivgt").tasks) == {"depth", "pose", "recon", "nvs"}


def test_ide3d_adapter(tmp_path, test_split):
    from ide3d.config import load_config
    from ide3d.model import build_model, save_pretrained

    cfg = load_config(ROOT / "ide3d/configs/tiny.yaml")
    save_pretrained(*build_model(cfg.model, seed=0), tmp_path / "ide3d")
    method = build("ide3d", checkpoint=tmp_path / "ide3d")
    method.load()
    scores = _score_all(method, test_split, ["grounding", "qa"])
    assert all(set(s) <= {"acc@0.25", "acc@0.5", "f1@0.25", "f1@0.5"} for s in scores["grounding"])
    assert all("qa_em" in s for s in scores["qa"])


def test_missing_run_is_unavailable_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/ here
    method = build("g2vlm")
    with pytest.raises(Unavailable, match="make reproduce-g2vlm"):
        method.load()


def test_depthvlm_adapter(tmp_path, test_split):
    from depthvlm.config import load_config
    from depthvlm.model import build_model, save_pretrained

    cfg = load_config(ROOT / "depthvlm/configs/tiny.yaml")
    save_pretrained(*build_model(cfg.model, seed=0), tmp_path / "depthvlm")
    method = build("depthvlm", checkpoint=tmp_path / "depthvlm")
    method.load()
    assert method.focal == cfg.data.focal  # no run config beside a bare folder: tiny.yaml's
    scores = _score_all(method, test_split, ["depth", "qa"])
    d = scores["depth"][0]
    assert "indoor_delta1" in d and "pixel_delta1" in d  # metric depth, sampled at the query pixels
    assert all("qa_em" in s for s in scores["qa"])


def test_fill_nearest():
    from benchmarks.methods.depthvlm import fill_nearest

    d = torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, 0.0, 0.0, 0.0]])  # no ties in distance
    assert fill_nearest(d).tolist() == [[1.0, 1.0, 5.0, 5.0], [1.0, 1.0, 5.0, 5.0]]


def test_vlm3_adapter(tmp_path, test_split):
    import json

    from vlm3.config import load_config
    from vlm3.model import VLM3
    from vlm3.train import SETTINGS_FILE, settings_dict

    cfg = load_config(ROOT / "vlm3/configs/tiny.yaml")
    path = VLM3.build(cfg.model, seed=0).save_pretrained(tmp_path / "vlm3") or tmp_path / "vlm3"
    (path / SETTINGS_FILE).write_text(json.dumps(settings_dict(cfg)))
    method = build("vlm3", checkpoint=path)
    method.load()
    scores = _score_all(method, test_split, ["depth", "pose", "qa"])
    assert set(scores["depth"][0]) == {"pixel_abs_rel", "pixel_delta1"}  # points only, no dense map
    assert 0 <= scores["pose"][0]["registered"] <= 1


def test_vlm3_pose_and_depth_conventions():
    from benchmarks.methods.vlm3 import distance_to_z, pose_from_answer
    from common.metrics import relative_pose_errors
    from vlm3.data import pose_targets

    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    w2c = np.tile(np.eye(4), (2, 1, 1))
    w2c[1, :3, :3] = Rotation.from_euler("YXZ", [20, -5, 3], degrees=True).as_matrix()
    w2c[1, :3, 3] = rng.normal(size=3)
    rel = pose_targets(torch.from_numpy(w2c[0]), torch.from_numpy(w2c[1]))
    T = pose_from_answer(rel["ypr"], rel["t_unit"], rel["distance"])
    rot, trans = relative_pose_errors(np.stack([np.eye(4), T]), w2c)
    assert rot[0] < 1e-6 and trans[0] < 1e-5
    K = torch.tensor([[100.0, 0, 64], [0, 100, 64], [0, 0, 1]])
    px = np.array([[63, 63], [0, 0]])  # the centre pixel's ray is almost the axis; the corner's is not
    z = distance_to_z(np.array([2.0, 2.0]), px, K)
    assert z[0] == pytest.approx(2.0, abs=1e-4) and z[1] == pytest.approx(
        2 / np.sqrt(1 + 2 * 0.635**2), rel=1e-3
    )


def test_tsdf_fusion_peer(tmp_path, test_split):
    pytest.importorskip("open3d", reason="open3d is the reconstruction peer (pyproject.toml)")
    from g2vlm.config import load_config
    from g2vlm.model import build_model

    cfg = load_config(ROOT / "g2vlm/configs/tiny.yaml", ["model.max_tokens=64"])
    build_model(cfg.model, seed=0).save_pretrained(tmp_path / "g2vlm")
    method = build("tsdf-fusion", checkpoint=tmp_path / "g2vlm")
    method.load()
    task = TASKS["recon"]()
    item = task.items(test_split)[0]
    answer = method.answer("recon", [item.query])[0]
    assert answer.points.shape == item.truth.points.shape and answer.valid.dtype == torch.bool
    assert task.score(item, answer)["scored"] in (0.0, 1.0)  # scored, or counted as failed: never dropped
