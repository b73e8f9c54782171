"""`make gpu-check` (scripts/gpu_check.py): one clear line and exit 2 without CUDA; the parsing of
pytest's junit report and the choice of each perf report's CUDA rows, checked on the CPU."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no device, also on a machine that has one
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert lines == ["gpu-check: no CUDA device (torch.cuda.is_available() is False); nothing was run"], lines
    assert not out.exists() and not (tmp_path / "gpu_check").exists()


def test_make_target_calls_the_script():
    proc = subprocess.run(["make", "-n", "gpu-check", "QUICK=1"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "scripts/gpu_check.py --out results/gpu_check.json --quick" in proc.stdout, proc.stdout


def test_junit_counts_and_node_ids(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "test_a.py").write_text(textwrap.dedent("""
        import pytest

        def test_ok():
            pass

        def test_bad():
            assert 1 == 2

        @pytest.mark.skip(reason="needs a GPU")
        def test_skipped():
            pass

        @pytest.mark.parametrize("x", [1, 2])
        def test_param(x):
            assert x == 1

        class TestGroup:
            def test_in_class(self):
                pass

            def test_in_class_fails(self):
                assert False

        @pytest.fixture
        def broken():
            raise RuntimeError("setup")

        def test_setup_error(broken):
            pass
    """))
    (tmp_path / "pkg" / "test_b.py").write_text("import no_such_module_here\n")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "-o", "junit_family=xunit1", "--continue-on-collection-errors", "pkg"],
                   cwd=tmp_path, capture_output=True, timeout=120)
    got = _module().parse_junit(junit)
    assert (got["passed"], got["failed"], got["errors"], got["skipped"]) == (3, 3, 2, 1), got
    assert sorted(got["failures"]) == sorted([
        "pkg/test_a.py::test_bad", "pkg/test_a.py::test_param[2]",
        "pkg/test_a.py::TestGroup::test_in_class_fails", "pkg/test_a.py::test_setup_error",
        "pkg/test_b.py"]), got["failures"]
    assert got["skips"] == {"pkg/test_a.py::test_skipped": "needs a GPU"}


def _row(impl, case):
    return {"impl": impl, "case": case, "median_s": 1.0}


def test_cuda_rows_of_each_benchmark():
    pick = _module().cuda_rows
    mpm = [_row("torch-reference-cpu", "forward 1000 particles"), _row("warp-cpu", "forward 1000 particles"),
           _row("warp-cuda", "forward 1000 particles"),
           _row("forward (taped)", "rollout 500 particles x 20 substeps (cpu)"),
           _row("backward", "rollout 500 particles x 20 substeps (cuda)"),
           _row("full tape", "forward+backward 300 particles x 100 substeps (cpu)")]
    assert [r["impl"] for r in pick("mpm", {"rows": mpm})] == ["warp-cuda", "backward"]
    endo = [_row("torch-cpu", "render forward, 500 Gaussians, 32x40"),
            _row("gsplat-cuda", "render forward, 500 Gaussians, 32x40"),
            _row("simulate", "refinement iteration")]
    assert [r["impl"] for r in pick("endogsim", {"rows": endo})] == ["gsplat-cuda"]
    ivgt = [_row("ivgt", "forward, tiny, 2 views of 64x64"), _row("ivgt", "SDF query, tiny model, 4 views"),
            _row("dense", "mesh extraction, sphere SDF, 64^3 cells"),
            _row("dense", "mesh extraction, trained IVGT SDF (run), 32^3 cells")]
    assert [r["case"][:9] for r in pick("ivgt", {"rows": ivgt})] == ["forward, ", "SDF query", "mesh extr"]
    dv = [_row("DepthVLM (one pass)", "448 px image, 16 answer tokens, cuda")]
    assert pick("depthvlm", {"rows": dv}) == dv
    cpu = [_row("DepthVLM (one pass)", "128 px image, 8 answer tokens, cpu")]
    assert pick("depthvlm", {"rows": cpu}) == []
