import json

import pytest

from common.errors import DatasetError
from common.results import markdown_table, read_results, validate_results, write_results


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
