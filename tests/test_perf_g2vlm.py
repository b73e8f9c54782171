"""The G2VLM performance benchmark runs (quick), both modes side by side, with its paper-scale counts."""

from benchmarks.perf import g2vlm


def test_g2vlm_perf_quick_rows_and_paper_scale_counts():
    report = g2vlm.run(quick=True)
    assert [r.impl for r in report.rows] == ["sensor depth", "RGB only"] * 2
    assert all(r.median_s > 0 and r.ratio is not None for r in report.rows)
    paper = [n for n in report.notes if n.startswith("paper scale")]
    assert paper and "language model 1.54 B" in paper[0]  # Qwen2-1.5B's published size
