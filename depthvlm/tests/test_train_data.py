import copy

import numpy as np
import pytest
import torch

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
