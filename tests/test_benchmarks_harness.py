"""The perf harness and the leaderboard (the benchmarks themselves run in `make benchmark`)."""

import json
import time

import numpy as np

from benchmarks import leaderboard
from benchmarks.perf import PerfReport, measure, peak_memory_mb
from common.results import write_results
from common.tests.test_results import example


def test_measure_and_ratios(tmp_path):
    report = PerfReport("toy", "sleep")
    slow, fast = report.compare(
        "case", {"slow": lambda: time.sleep(0.02), "fast": lambda: time.sleep(0.005)}, repeats=3, memory=False
    )
    assert slow.ratio == 1.0
    assert 2.0 < fast.ratio < 6.0  # 20 ms vs 5 ms: about 4x, loose for a loaded machine
    assert slow.q25_s <= slow.median_s <= slow.q75_s
    table = report.table()
    assert "| case | fast |" in table and "x |" in table
    data = json.loads(report.write(tmp_path).read_text())
    assert [r["impl"] for r in data["rows"]] == ["slow", "fast"]


def test_peak_memory_sees_a_large_allocation():
    def allocate():
        a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.02)
        return a.sum()

    assert peak_memory_mb(allocate) > 48
    assert measure(lambda: None, impl="noop", case="c", repeats=2).peak_memory_mb < 16


def test_peak_memory_is_seen_again_after_an_earlier_call_freed_it():
    """Small blocks live on glibc's heap; freed below a block that stays alive, they are kept for
    reuse, so without handing them back a second identical call would read as ~0 MiB."""
    pins = []

    def allocate_small():
        blocks = [np.ones(4096) for _ in range(2048)]  # 2048 x 32 KiB = 64 MiB, below mmap's threshold
        pins.append(np.ones(4096))  # outlives the call, above the freed blocks: the heap cannot shrink
        time.sleep(0.02)
        return sum(b[0] for b in blocks)

    first, second = peak_memory_mb(allocate_small), peak_memory_mb(allocate_small)
    assert first > 48 and second > 48


def test_leaderboard_groups_by_data(tmp_path):
    a = example()
    b = example() | {"paper": "vlm3", "ours": "vlm3", "methods": {"vlm3": {"depth_abs_rel": 0.05}}}
    c = example() | {"paper": "depthvlm", "ours": "depthvlm", "methods": {"depthvlm": {"depth_abs_rel": 0.1}}}
    c["data"] = dict(c["data"], split="val")
    for r in (a, b, c):
        write_results(tmp_path / "results" / r["paper"] / "results.json", r)
    groups = leaderboard.collect(tmp_path / "results")
    assert len(groups) == 2
    test_group = groups["synthetic/test v1 scenes=32 seed=0"]
    assert set(test_group["rows"]) == {"ivgt:ivgt", "ivgt:baseline", "vlm3:vlm3"}
    leaderboard.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "lb")])
    md = (tmp_path / "lb.md").read_text().split("## synthetic/test v1 scenes=32 seed=0")[1].split("\n## ")[0]
    depth_table = md.split("### depth_abs_rel (lower is better)")[1].split("###")[0]
    assert depth_table.strip().splitlines()[2:] == [
        "| 1 | vlm3:vlm3 | 0.05 |",
        "| 2 | ivgt:ivgt | 0.08 |",
        "| 3 | ivgt:baseline | 0.45 |",
    ]
    assert "| 1 | ivgt:ivgt | 61.2 |" in md.split("### pose_auc30 (higher is better)")[1]
    assert "data:image/png;base64," in (tmp_path / "lb.html").read_text()


def test_threads_option_sets_torch_threads_for_the_run(monkeypatch, tmp_path):
    import types

    import pytest
    import torch

    from benchmarks.perf import __main__ as cli

    seen = []

    def run(quick):
        seen.append(torch.get_num_threads())
        return PerfReport("toy", "nothing")

    monkeypatch.setattr(cli, "available", lambda: ["toy"])
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: types.SimpleNamespace(run=run))
    before = torch.get_num_threads()
    try:
        assert cli.main(["toy", "--threads", "1", "--out", str(tmp_path)]) == 0
        assert seen == [1] and json.loads((tmp_path / "toy.json").read_text())["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        cli.main(["toy", "--threads", "-2"])
