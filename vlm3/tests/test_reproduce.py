"""`python -m vlm3.reproduce --profile long`: the profile file, its errors, and the run end to end."""

import json
from pathlib import Path

import pytest

from common.config import ConfigError, config_to_dict
from vlm3.config import load_config, load_profile

CONFIGS = Path(__file__).parents[1] / "configs"


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("mixture", "generate_scenes", "turns", "samples"):  # dict fields
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_long_profile_is_tiny_with_only_its_runs_changes():
    tiny = dict(_flat(config_to_dict(load_config(CONFIGS / "tiny.yaml"))))
    runs = load_profile(CONFIGS / "long.yaml", ["train.seed=3"])
    assert set(runs) == {"pose", "correspondence"}
    changed = {n: {k for k, v in _flat(config_to_dict(c)) if tiny[k] != v} for n, c in runs.items()}
    common = {"data.root", "data.generate_scenes", "train.steps", "train.seed"}
    assert changed["pose"] == common | {"model.pair_as_video", "data.mixture", "data.turns", "train.checkpoint_every",
                                        "eval.pose_pairs", "data.test_root"}
    assert changed["correspondence"] == common | {"model.patch_size", "data.mixture"}
    pose, corr = runs["pose"], runs["correspondence"]
    assert pose.data.mixture == {"pose": 1.0} and corr.data.mixture == {"correspondence": 1.0}
    assert pose.data.turns == {"pose": 1}  # one question per pose sample, as the paper's
    # Pose on more held-out scenes than the benchmark's 32 (whose first 32 they are), correspondence on those 32.
    assert pose.data.test_root != pose.data.root and corr.data.test_root is None
    assert pose.data.generate_scenes["test"] > corr.data.generate_scenes["test"] == 32
    assert pose.eval.pose_pairs == 20 * tiny["eval.pose_pairs"]
    assert pose.train.seed == corr.train.seed == 3  # the overrides reach every run
    # A token of the correspondence run spans fewer coordinate units (of 1000) than identity's error.
    span = 1000 * corr.model.patch_size * corr.model.merge_size / corr.data.size
    assert span < 0.5 * 164.0 and span < 1000 * 16 / corr.data.size


def test_scene_means_average_each_scene_s_items():
    """Per distinct pose pair (first seen first) or per correspondence question, grouped by scene."""
    from types import SimpleNamespace as NS

    from vlm3.reproduce import scene_means

    pose = [NS(target={"pair": p}) for p in ([1, 0, 1], [1, 0, 1], [0, 2, 3], [1, 4, 5])]  # 3 distinct pairs
    assert scene_means("pose", {"pose": pose}, [10.0, 4.0, 20.0]).tolist() == [4.0, 15.0]
    corr = [NS(target={"where": w}) for w in ([2, 0, 1], [0, 1, 2], [2, 3, 4])]
    assert scene_means("correspondence", {"correspondence": corr}, [1.0, 5.0, 3.0]).tolist() == [5.0, 2.0]
    with pytest.raises(ValueError, match="pose: 2 per-item values for 3 items"):
        scene_means("pose", {"pose": pose}, [1.0, 2.0])


def test_bad_profile_is_one_error_naming_the_file_and_the_run(tmp_path):
    (tmp_path / "tiny.yaml").write_text((CONFIGS / "tiny.yaml").read_text())
    bad = tmp_path / "p.yaml"
    bad.write_text("base: tiny.yaml\nruns:\n  pose:\n    train.stepz: 3\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: runs\.pose: .*stepz"):
        load_profile(bad)
    bad.write_text("runs: {pose: {train.steps: 3}}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: expected 'base'"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(tmp_path / "absent.yaml")


def test_long_profile_refuses_a_config_in_one_line(capsys):
    from vlm3.reproduce import main

    with pytest.raises(SystemExit) as exc:
        main(["--profile", "long", "--config", str(CONFIGS / "tiny.yaml")])
    assert exc.value.code == 2
    assert "--config: not with --profile long" in capsys.readouterr().err


@pytest.mark.slow
def test_long_profile_end_to_end_reports_each_run_against_identity(cfg_overrides, tmp_path):
    """Both per-task runs train (2 steps, tiny model) and answer only their own task's held-out
    questions, beside identity and the training prior, with a paired test of the headline metric."""
    from vlm3.reproduce import main

    over = [o for o in cfg_overrides if not o.startswith("train.out_dir")]
    data_root = next(o.split("=", 1)[1] for o in over if o.startswith("data.root="))
    held_out = tmp_path / "held-out"  # the pose run's data.test_root, generated here
    over += ["train.steps=2", "data.generate_scenes={train: 2, test: 2}", f"data.test_root={held_out}"]
    main(["--profile", "long", "--out", str(tmp_path), "--jobs", "1", "--threads", "1", *over])
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["methods"]
    assert set(methods["vlm3-long-pose"]) == {"pose_rot_err_deg", "pose_trans_err_deg", "pose_auc30",
                                              "pose_angle_err_deg", "pose_distance_abs_rel", "parse_failure_rate"}
    assert set(methods["vlm3-long-correspondence"]) == {"corr_epe_mean", "corr_epe_median", "parse_failure_rate"}
    assert methods["baseline-identity-correspondence"]["corr_epe_mean"] > 0
    assert methods["baseline-identity-pose"]["pose_trans_err_deg"] == 90.0
    tests = results["paired_bootstrap_vs_identity"]
    assert tests["pose"]["metric"] == "pose_rot_err_deg" and tests["correspondence"]["metric"] == "corr_epe_mean"
    assert all(0 < t["p_value"] <= 1 and 0 < t["per_scene"]["p_value"] <= 1 for t in tests.values())
    assert all(1 <= t["per_scene"]["scenes"] <= 2 for t in tests.values())  # the 2 test scenes
    assert results["data"]["runs"]["pose"]["root"] == str(held_out)
    assert (held_out / "test" / "index.json").is_file() and not (held_out / "train").exists()
    assert (Path(data_root) / "train" / "index.json").is_file()
    for run in ("pose", "correspondence"):
        assert (tmp_path / run / "checkpoint" / "trainer_state.json").is_file()
    assert "paired bootstrap" in (tmp_path / "results.md").read_text().lower()
