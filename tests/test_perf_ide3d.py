"""The 3D-IDE performance benchmark runs (quick) and compares the three pipelines in one report."""

from benchmarks.perf import ide3d


def test_ide3d_perf_quick_rows_and_paper_scale_counts():
    report = ide3d.run(quick=True)
    impls = [r.impl for r in report.rows]
    assert impls[0].startswith("base VLM") and "3D-IDE (inference model)" in impls and len(impls) == 3
    assert all(r.median_s > 0 and r.ratio is not None for r in report.rows)
    paper = [n for n in report.notes if n.startswith("paper scale")]
    assert paper and "8.08 B parameters" in paper[0]
