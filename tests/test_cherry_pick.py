"""Cherry-pick: `<pkg>/` plus `common/` copied into an empty folder work there (DESIGN.md).

Runs in a subprocess whose import path starts with the copy, and checks that the copy, not this
checkout, is what gets imported. In `make test` a paper package's tests are collected there
(every module imported from the copy); `make cherry-pick` (CHERRY_PICK_FULL=1) runs them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("ivgt", "depthvlm", "ide3d", "vlm3", "g2vlm", "endogsim")
# A paper package is cherry-pick-tested once it has tests of its own.
WITH_TESTS = [p for p in PAPERS if (ROOT / p / "tests").is_dir()]
FULL = os.environ.get("CHERRY_PICK_FULL") == "1"


def run_in_copy(tmp_path: Path, packages: list[str], args: list[str]) -> subprocess.CompletedProcess:
    for pkg in packages:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_common_alone(tmp_path):
    check = (
        "import pathlib, common, common.cameras, common.metrics, common.datasets, common.synthetic, common.results, common.config;"
        f"assert pathlib.Path(common.__file__).is_relative_to({str(tmp_path)!r}), common.__file__"
    )
    out = run_in_copy(tmp_path, ["common"], ["-c", check])
    assert out.returncode == 0, out.stderr
    tests = ["common/tests/test_cameras.py", "common/tests/test_results.py"]
    out = run_in_copy(tmp_path / "again", ["common"], ["-m", "pytest", "-q", "-p", "no:cacheprovider", *tests])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.parametrize("pkg", WITH_TESTS)
def test_paper_package_with_common(tmp_path, pkg):
    mode = ["-x"] if FULL else ["--collect-only"]
    out = run_in_copy(tmp_path, ["common", pkg], ["-m", "pytest", "-q", *mode, "-p", "no:cacheprovider", f"{pkg}/tests"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " error" not in out.stdout.splitlines()[-1], out.stdout[-3000:]
