"""The IVGT perf's trained-SDF meshing case: dense and coarse-to-fine on a saved model's field give the
same mesh, timed side by side; skipped with a note when there is no trained run."""

from pathlib import Path

import torch

from benchmarks.perf import PerfReport
from benchmarks.perf.ivgt import trained_meshing
from common.synthetic import generate_split
from ivgt.config import load_config
from ivgt.model import IVGT


def test_trained_meshing_case(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = PerfReport("ivgt", "test")
    trained_meshing(report, "cpu", 16)
    assert report.notes == ["trained-SDF meshing: skipped (no trained run or no make data)"]
    torch.manual_seed(0)
    root = Path(__file__).resolve().parents[1]
    IVGT.from_model_config(load_config(root / "ivgt/configs/tiny.yaml").model).save_pretrained(
        tmp_path / "results/ivgt/run/model"
    )
    generate_split(tmp_path / "data/synthetic", "test", scenes=1, views=4, size=64, seed=0, progress=False)
    report = PerfReport("ivgt", "test")
    trained_meshing(report, "cpu", 16)
    assert [r.impl for r in report.rows] == ["dense", "coarse-to-fine"]
    assert "trained SDF 16^3" in report.notes[0] and "queries" in report.notes[0]


def test_demo_scaling_quick():
    """The demo-cost-against-views case: a row per view count with per-stage seconds and memory."""
    from benchmarks.perf.ivgt import demo_scaling

    report = PerfReport("ivgt", "test")
    demo_scaling(report, views=(1, 2), size=32, mesh_resolution=8)
    assert [r.items for r in report.rows] == [1, 2], report.notes
    for r in report.rows:
        assert set(r.extra["seconds"]) == {"read", "reconstruct", "render", "mesh"}
        assert r.peak_memory_mb > 0 and set(r.extra["stage_peak_rss_mb"]) >= {"render", "mesh"}
    assert "demo 2 views" in report.notes[-1]
