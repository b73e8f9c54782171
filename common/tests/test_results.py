import json

import pytest

from common.errors import DatasetError
from common.results import markdown_table, read_results, truncate_jsonl, validate_results, write_results


def example():
    return {
        "paper": "ivgt",
        "ours": "ivgt",
        "data": {"name": "synthetic", "split": "test", "generator_version": "1", "scenes": 32, "seed": 0},
        "metrics": {"depth_abs_rel": {"higher_is_better": False}, "pose_auc30": {"higher_is_better": True}},
        "methods": {"ivgt": {"depth_abs_rel": 0.08, "pose_auc30": 61.2}, "baseline": {"depth_abs_rel": 0.45}},
        "ablations": {"ivgt-no-eikonal": {"depth_abs_rel": 0.09}},
        "ci95": {"ivgt": {"depth_abs_rel": [0.07, 0.09]}},
        "paper_reported": {"pose_auc30": {"value": 88.2, "dataset": "CO3Dv2"}},
        "environment": {"device": "cpu", "seconds": 1.0, "git": "abc"},
    }


def test_round_trip(tmp_path):
    path = write_results(tmp_path / "r" / "results.json", example())
    assert read_results(path) == example()
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("methods"), "'methods'"),
        (lambda r: r["methods"].pop("ivgt"), "'methods'"),
        (lambda r: r["methods"]["ivgt"].update(typo_metric=1.0), "methods.ivgt.typo_metric"),
        (lambda r: r["methods"]["ivgt"].update(depth_abs_rel=float("nan")), "methods.ivgt.depth_abs_rel"),
        (lambda r: r["metrics"]["pose_auc30"].pop("higher_is_better"), "metrics.pose_auc30.higher_is_better"),
        (lambda r: r["ci95"]["ivgt"].update(depth_abs_rel=[0.2, 0.1]), "ci95.ivgt.depth_abs_rel"),
        (lambda r: r["paper_reported"]["pose_auc30"].pop("dataset"), "paper_reported.pose_auc30"),
        (lambda r: r["data"].pop("split"), "data.split"),
    ],
)
def test_bad_results_name_the_field(mutate, field):
    results = example()
    mutate(results)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_results(results)


def test_read_bad_file_names_it(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="results.json: not valid JSON"):
        read_results(path)
    path.write_text(json.dumps({"paper": "x"}))
    with pytest.raises(DatasetError, match="results.json: field 'ours'"):
        read_results(path)


def test_markdown_table():
    table = markdown_table(example()).splitlines()
    assert table[0] == "| method | depth_abs_rel ↓ | pose_auc30 ↑ |"
    assert table[2] == "| **ivgt** | 0.08 | 61.2 |"
    assert table[3] == "| baseline | 0.45 | - |"
    assert table[4] == "| ivgt-no-eikonal (ablation) | 0.09 | - |"
    assert table[5] == "| paper (reported) | - | 88.2 (CO3Dv2) |"


def _log(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_truncate_jsonl_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)]
    _log(log, rows)
    assert truncate_jsonl(log, 4) == 4
    assert _rows(log) == rows[:4] and log.read_text().endswith("\n")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: temporary file renamed
    assert truncate_jsonl(log, 4) == 4 and _rows(log) == rows[:4]  # idempotent
    assert truncate_jsonl(log, 0) == 0 and log.read_text() == ""
    assert truncate_jsonl(tmp_path / "missing.jsonl", 3) == 0 and not (tmp_path / "missing.jsonl").exists()
    _log(log, [{"it": 1}, {"it": 2}])
    assert truncate_jsonl(log, 1, key="it") == 1 and _rows(log) == [{"it": 1}]


def test_truncate_jsonl_drops_a_torn_last_line_and_names_a_bad_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    _log(log, [{"step": 1}, {"step": 2}], tail='{"step": 3, "lo')  # killed mid-write
    assert truncate_jsonl(log, 5) == 2 and _rows(log) == [{"step": 1}, {"step": 2}]
    _log(log, [{"step": 1}], tail="not json\n" + json.dumps({"step": 2}) + "\n")
    with pytest.raises(DatasetError, match=r"metrics\.jsonl: line 2: not valid JSON"):
        truncate_jsonl(log, 5)
    _log(log, [{"step": 1}, {"loss": 2.0}])
    with pytest.raises(DatasetError, match=r"line 2: expected a JSON object with 'step'"):
        truncate_jsonl(log, 5)


def test_truncate_jsonl_of_a_stage_qualified_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    s1 = [{"stage": 1, "step": s} for s in range(3)]  # steps numbered from 0 (depthvlm)
    s2 = [{"stage": 2, "step": s} for s in range(5)]
    _log(log, s1 + s2)
    assert truncate_jsonl(log, 2, stage=2) == 6 and _rows(log) == s1 + s2[:3]  # earlier stage kept whole
    assert truncate_jsonl(log, -1, stage=2) == 3 and _rows(log) == s1  # stage 2 without a checkpoint
    _log(log, s1 + s2)
    assert truncate_jsonl(log, 1, stage=1) == 2 and _rows(log) == s1[:2]  # later stages dropped
    text = [{"stage": "text", "step": s} for s in range(3)]
    _log(log, s1 + text)
    assert truncate_jsonl(log, 0, stage="text") == 4 and _rows(log) == s1 + text[:1]
    _log(log, s1 + s2)
    assert truncate_jsonl(log, 1, stage=3) == 8  # a stage not logged yet: all earlier lines kept
    _log(log, [{"step": 1}])
    with pytest.raises(DatasetError, match=r"line 1: expected a JSON object with 'step' and 'stage'"):
        truncate_jsonl(log, 1, stage=1)
