"""vlm3.diagnostics: rendered second views (turned pairs, moved copies) and their questions, the
two-view diagnostics, and the rule that the product never imports them."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm3 import prompts as P
from vlm3.data import QuestionBuilder, TaskDataset, TaskSettings, pose_targets
from vlm3.diagnostics import rendered, two_view
from vlm3.diagnostics.rendered import RenderedQuestionBuilder, RenderedSceneCache
from vlm3.diagnostics.two_view import by_path, path_kind
from vlm3.evaluate import baseline_answers, held_out_questions

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def questions(tiny_cfg):
    return held_out_questions(tiny_cfg)


@pytest.fixture(scope="module")
def cache(data_root):
    return RenderedSceneCache(data_root, "train", zoom=(1.0, 1.3), seed=0)


def test_the_product_never_imports_the_diagnostics():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("diagnostics", "tests"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) else []
            )
            offenders += [f"{rel}: {n}" for n in names if n.startswith("vlm3.diagnostics")]
    assert offenders == []


def test_moved_settings_are_one_line_naming_their_new_place(tmp_path):
    from common.config import ConfigError
    from vlm3.config import load_config

    with pytest.raises(ConfigError, match="'data.turn_pairs' is no longer a config setting.*--turn-pairs"):
        load_config(None, ["data.turn_pairs=0.5"])
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text("data:\n  corr_shift: 20\n")
    with pytest.raises(ConfigError, match=f"{yaml_file}: 'data.corr_shift' .*vlm3.diagnostics.rendered --corr-shift"):
        load_config(yaml_file)
    with pytest.raises(ConfigError, match="'data.corr_same_view' is no longer .*rendered --copy-lessons P"):
        load_config(None, ["data.corr_same_view=0.35"])


def test_with_no_rendered_views_the_questions_are_the_product_s(cache):
    """RenderedQuestionBuilder replays QuestionBuilder's draws: with copy_lessons and turn_pairs 0
    every question is the product's."""
    settings = TaskSettings(focal_depth=60, focal_pose=45, min_object_pixels=20)
    ours, product = RenderedQuestionBuilder(cache, settings), QuestionBuilder(cache, settings)
    for task in ("correspondence", "pose"):
        for turns in (1, 4):
            a = TaskDataset(ours, task, 4, seed=2, turns=turns)
            b = TaskDataset(product, task, 4, seed=2, turns=turns)
            for k in range(4):
                assert (a[k].prompt, a[k].answer, a[k].turns) == (b[k].prompt, b[k].answer, b[k].turns)


def test_both_orders_swaps_half_the_training_pairs(cache):
    """--both-orders: without it most pairs run forwards along the path (only the path's end is drawn
    backwards: 3 of 16 draws for 8 views); with it half of them run backwards, each gap as before."""
    sample = cache.samples[0]
    V = sample.images.shape[0]

    def backwards(builder):
        rng = np.random.default_rng(0)
        pairs = [builder.draw_pair(rng, sample) for _ in range(2000)]
        assert all(1 <= abs(i - j) <= 2 and 0 <= min(i, j) and max(i, j) < V for i, j in pairs)
        return np.mean([j < i for i, j in pairs])

    settings = TaskSettings()
    assert backwards(RenderedQuestionBuilder(cache, settings)) == pytest.approx(3 / (2 * V), abs=0.03)
    assert backwards(RenderedQuestionBuilder(cache, settings, both_orders=True)) == pytest.approx(0.5, abs=0.03)


def test_small_turns_first_draws_small_orbit_turns_then_the_product_s(tiny_cfg):
    """--small-turns-first N: the first N steps' pose questions are on pairs turning by at most
    --max-turn degrees (orbits only with --orbits-first); from step N on the items are the product's."""
    from vlm3.train import build_mixture as product_mixture

    cfg = tiny_cfg
    B = cfg.train.batch_size
    # the test scenes: a forward path (turns of 1-5 deg) and a 4-view orbit (48 and 95 deg)
    mix = rendered.build_mixture(cfg, small_turns_first=2, max_turn=50.0, orbits_first=True)
    cache = mix.first.datasets["pose"].builder.cache
    first = [mix[k][1] for k in range(2 * B) if mix[k][0] == "pose"]
    assert first, "the tiny mixture asks pose questions in its first two steps"
    for e in first:
        s, i, j = e.target["pair"]
        assert path_kind(cache, s) == "orbit"
        assert pose_targets(cache.frame(s, i).w2c, cache.frame(s, j).w2c)["angle"] <= 50.0
    product = product_mixture(cfg)
    for k in range(2 * B, len(mix)):
        (task, e), (task0, e0) = mix[k], product[k]
        assert (task, e.prompt, e.answer, e.turns) == (task0, e0.prompt, e0.answer, e0.turns)
    # without the lesson the first steps hold larger turns and forward paths too
    pose = [e for task, e in (product[k] for k in range(len(product))) if task == "pose"]
    assert max(e.target["angle"] for e in pose) > 50.0
    assert {path_kind(cache, e.target["pair"][0]) for e in pose} == {"orbit", "forward"}
    with pytest.raises(ValueError, match="max_turn -1"):
        RenderedQuestionBuilder(cache, TaskSettings(), max_turn=-1)


def test_shifted_copy_lessons_move_the_content(cache):
    """--corr-shift: the copy lesson's second view is the same camera with its crop window moved by
    (dx, dy) stored pixels; the match is the query moved by -(dx, dy) (mapped to the model input) and
    shows the query's colour."""
    from common.cameras import map_pixels

    builder = RenderedQuestionBuilder(cache, TaskSettings(focal_depth=60), corr_shift=6, copy_lessons=1.0)
    moved = 0
    for k in range(6):
        rng = np.random.default_rng([7, k])
        s = int(rng.integers(len(cache)))  # the draws `correspondence` makes first, replayed
        i, _ = builder.draw_pair(rng, cache.samples[s])
        rng.random()
        m = 6
        dx, dy = int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1))
        ex = builder.correspondence(np.random.default_rng([7, k]))
        if ex is None:
            continue
        (a, b), q, mt = ex.images, np.array(ex.target["query"]), np.array(ex.target["match"])
        vi, vj = cache.view(s, i, 60, True), cache.view(s, ("shift", i, dx, dy, m), 60, True)
        assert torch.equal(a, vi.image) and torch.equal(b, vj.image)
        uv = P.denormalize_xy(q, a.shape[-1], a.shape[-2], P.BOX_SCALE)  # model-input pixel of view i
        uv0 = map_pixels(torch.tensor(uv[None]), vi.K, vi.K0)[0].numpy() - np.array([dx, dy])  # stored, moved
        expected = P.normalize_xy(
            map_pixels(torch.tensor(uv0[None]), vj.K0, vj.K).numpy(), b.shape[-1], b.shape[-2], P.BOX_SCALE
        )[0]
        assert mt == pytest.approx(expected, abs=1.0)  # text coordinates are integers
        ma = P.denormalize_xy(mt, b.shape[-1], b.shape[-2], P.BOX_SCALE).astype(int)
        qa = uv.astype(int)
        assert float((a[:, qa[1], qa[0]] - b[:, ma[1], ma[0]]).abs().max()) < 0.1
        moved += int((dx, dy) != (0, 0))
    assert moved >= 3


def test_turned_pairs_share_the_rotation_and_match_colours(cache):
    """--turn-pairs: the second view is rendered from the first camera's centre with the real partner's
    orientation, so the rotation is the real pair's, the translation zero, and each query pixel's
    colour is found at its match."""
    builder = RenderedQuestionBuilder(cache, TaskSettings(focal_depth=60, focal_pose=45, pair_gap=(1, 1)), 1.0)
    rng = np.random.default_rng(0)
    ex = builder.pose(rng, kind="ypr")
    s, i, turned = ex.target["pair"]
    assert turned[0] == "turn" and turned[1] == i
    real = pose_targets(cache.samples[s].w2c[i], cache.samples[s].w2c[turned[2]])
    assert ex.target["distance"] == pytest.approx(0.0, abs=1e-5)  # w2c are stored as float32
    assert np.array(ex.target["R"]) == pytest.approx(real["R"], abs=1e-9) and real["angle"] > 1.0
    diffs = []
    ds = TaskDataset(builder, "correspondence", 12, seed=4)
    for k in range(12):
        e = ds[k]
        (a, b), q, m = e.images, np.array(e.target["query"]), np.array(e.target["match"])
        qa = P.denormalize_xy(q, a.shape[-1], a.shape[-2], P.BOX_SCALE).astype(int)
        mb = P.denormalize_xy(m, b.shape[-1], b.shape[-2], P.BOX_SCALE).astype(int)
        diffs.append(float((a[:, qa[1], qa[0]] - b[:, mb[1], mb[0]]).abs().max()))
        assert not torch.equal(a, b)
    assert np.median(diffs) < 0.05  # resampling blurs edges a little; a wrong match differs by ~0.3


def test_turned_diagnostic_asks_rotations_of_the_same_pairs(tiny_cfg, cfg_overrides, questions, capsys):
    """two_view --turned: the held-out pairs' rotations with the second camera turned in place; the CLI
    scores the identity baseline on them without a checkpoint."""
    turned = rendered.held_out_questions(tiny_cfg, turned=True)
    assert set(turned) == {"correspondence", "pose"}
    assert {e.kind for e in turned["pose"]} == {"angle", "ypr"}
    real = [e for e in questions["pose"] if e.kind == "ypr"]
    turned_ypr = [e for e in turned["pose"] if e.kind == "ypr"]
    assert len(turned_ypr) == len(real) > 0
    for a, b in zip(turned_ypr, real):
        assert a.target["ypr"] == pytest.approx(b.target["ypr"], abs=1e-6)
    assert all(e.target["distance"] < 1e-5 and e.target["pair"][2][0] == "turn" for e in turned["pose"])
    two_view.main(["--baseline", "--turned", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {
        "corr_epe_mean",
        "corr_epe_median",
        "pose_rot_err_deg",
        "pose_angle_err_deg",
        "parse_failure_rate",
    }
    assert metrics["corr_epe_mean"] > 0 and metrics["parse_failure_rate"] == 0
    with pytest.raises(SystemExit):
        two_view.main(["--turned", *cfg_overrides])  # neither a checkpoint nor --baseline


def test_shifted_diagnostic_asks_views_against_moved_copies(tiny_cfg, cfg_overrides, capsys):
    shifted = rendered.held_out_questions(tiny_cfg, shifted=5)
    assert (
        set(shifted) == {"correspondence"} and len(shifted["correspondence"]) == tiny_cfg.eval.correspondence
    )
    assert any(e.target["match"] != e.target["query"] for e in shifted["correspondence"])
    two_view.main(["--baseline", "--shifted", "5", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert (
        set(metrics) == {"corr_epe_mean", "corr_epe_median", "parse_failure_rate"}
        and metrics["corr_epe_mean"] > 0
    )


def test_by_path_splits_the_two_view_questions(tiny_cfg, cfg_overrides, questions, capsys):
    """two_view --by-path: the correspondence and pose questions partitioned by camera path; true answers get
    every yaw sign, identity's yaw 0 none."""
    from vlm3.train import scene_cache

    cache = scene_cache(tiny_cfg, "test")
    truth = {t: [e.answer for e in exs] for t, exs in questions.items()}
    split = by_path(questions, truth, cache)
    assert set(split) == {path_kind(cache, s) for s in range(len(cache))} and set(split) <= {
        "orbit",
        "forward",
    }
    assert sum(m["correspondences"] for m in split.values()) == len(questions["correspondence"])
    assert sum(m["pose_pairs"] for m in split.values()) == len(questions["pose"]) // 4
    turning = [m for m in split.values() if "pose_yaw_sign_acc" in m]
    assert turning, "some held-out pair turns by 1 deg or more"
    for m in split.values():
        assert m["corr_epe_mean"] < 1e-9 and m["pose_rot_err_deg"] < 0.2
    assert all(m["pose_yaw_sign_acc"] == 1.0 and m["pose_yaw_sign_acc_per_scene"] == [1.0, 1.0, 1.0]
               for m in turning)
    assert all(0.0 <= m["pose_yaw_right_share"] <= 1.0 for m in turning)
    stats = {
        "depth_median": 3.0,
        "distance_median": 1.0,
        "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0},
    }
    identity = by_path(questions, baseline_answers(questions, stats), cache)
    assert all(
        identity[k]["pose_yaw_sign_acc"] == 0.0 and identity[k]["pose_yaw_pearson"] is None
        and identity[k]["pose_yaw_sign_acc_per_scene"] == [0.0, 0.0, 0.0]
        for k in identity
        if "pose_yaw_sign_acc" in identity[k]
    )
    two_view.main(["--baseline", "--by-path", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["by_path"]) == set(split)


def test_training_with_rendered_lessons_writes_a_checkpoint(cfg_overrides, tmp_path, capsys):
    """python -m vlm3.diagnostics.rendered: the product's training loop on a mixture with turned pairs
    and moved copy lessons."""
    rendered.main(["--turn-pairs", "0.5", "--copy-lessons", "0.5", "--corr-shift", "4", "--both-orders",
                   "--small-turns-first", "1", "--orbits-first", *cfg_overrides,
                   "train.steps=2", "train.batch_size=2", f"train.out_dir={tmp_path}"])
    assert (tmp_path / "checkpoint" / "trainer_state.json").is_file()
    assert "checkpoint:" in capsys.readouterr().out


def test_paired_vs_identity_tests_rotation_and_correspondence_against_identity(tiny_cfg, cfg_overrides, questions):
    """--paired: identity against itself differs by nothing; a model that answers every pair a
    90 deg yaw, and every match 300 units right of the query, is worse than identity, per item and per
    test scene."""
    from vlm3.diagnostics.two_view import paired_vs_identity

    stats = {"depth_median": 3.0, "distance_median": 1.0,
             "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0}}
    identity = baseline_answers(questions, stats)
    same = paired_vs_identity(questions, identity, stats)
    assert set(same) == {"pose_rot_err_deg", "corr_epe_mean"}
    assert all(t["difference"] == 0 and t["per_scene"]["difference"] == 0 for t in same.values())
    worse = dict(identity)
    worse["pose"] = [P.pose_answer("ypr", ypr=[90.0, 0.0, 0.0]) if e.kind == "ypr" else a
                     for e, a in zip(questions["pose"], identity["pose"])]
    worse["correspondence"] = [P.correspondence_answer(np.array([[min(e.target["query"][0] + 300, 999),
                                                                   e.target["query"][1]]]))
                               for e in questions["correspondence"]]
    tests = paired_vs_identity(questions, worse, stats)
    scenes = {e.target["pair"][0] for e in questions["pose"]}
    for t in tests.values():
        assert t["difference"] > 0 and t["per_scene"]["difference"] > 0
    assert tests["pose_rot_err_deg"]["per_scene"]["scenes"] == len(scenes)
    with pytest.raises(SystemExit) as exit_:  # identity against itself: one line, exit 2
        two_view.main(["--baseline", "--paired", *cfg_overrides])
    assert exit_.value.code == 2


@pytest.mark.parametrize("flags, message", [
    (["--small-turns-first", "-1"], "--small-turns-first -1: expected >= 0"),
    (["--corr-shift", "4"], "--copy-lessons 0.0: expected 0..1, and > 0 with --corr-shift"),
    (["--copy-lessons", "1.5"], "--copy-lessons 1.5: expected 0..1"),
])
def test_a_bad_curriculum_or_copy_lesson_flag_is_one_line_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        rendered.main([*flags, "data.root=/nonexistent/never-written"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not Path("/nonexistent/never-written").exists()


def test_copy_lessons_ask_a_view_against_itself_in_training_only(cache, tiny_cfg):
    """--copy-lessons P: a share P of the training correspondence questions pair a view with itself
    (the answer is the query); the product's questions, and the held-out ones, never do."""
    from vlm3.train import build_mixture as product_mixture

    def same_view_share(builder):
        examples = [e for e in (TaskDataset(builder, "correspondence", 200, seed=3)[k] for k in range(200)) if e]
        return np.mean([e.target["where"][1] == e.target["where"][2] for e in examples])

    settings = TaskSettings(focal_depth=60)
    assert same_view_share(QuestionBuilder(cache, settings)) == 0.0
    assert same_view_share(RenderedQuestionBuilder(cache, settings, copy_lessons=1.0)) == 1.0
    assert same_view_share(RenderedQuestionBuilder(cache, settings, copy_lessons=0.35)) == pytest.approx(0.35, abs=0.1)
    ex = TaskDataset(RenderedQuestionBuilder(cache, settings, copy_lessons=1.0), "correspondence", 4, seed=1)[0]
    assert ex.target["match"] == ex.target["query"]
    mix = rendered.build_mixture(tiny_cfg, copy_lessons=1.0)
    corr = [e for task, e in (mix[k] for k in range(len(mix))) if task == "correspondence"]
    assert corr and all(e.target["where"][1] == e.target["where"][2] for e in corr)
    product_mix = product_mixture(tiny_cfg)
    product = [e for task, e in (product_mix[k] for k in range(len(mix))) if task == "correspondence"]
    assert product and not any(e.target["where"][1] == e.target["where"][2] for e in product)
    with pytest.raises(ValueError, match="corr_shift 4: moves the copy lessons, but copy_lessons is 0"):
        RenderedQuestionBuilder(cache, settings, corr_shift=4)
