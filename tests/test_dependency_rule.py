"""The dependency rule: a paper package imports `common` and third-party libraries only, never
another paper package; `common` imports no paper package and nothing from `benchmarks`."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("ivgt", "depthvlm", "ide3d", "vlm3", "g2vlm", "endogsim")


def imported_top_levels(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(owner: str, root: Path = ROOT) -> list[str]:
    forbidden = set(PAPERS) - {owner}
    if owner == "common":
        forbidden |= {"benchmarks"}
    return [
        f"{path.relative_to(root)}:{line} imports {name}"
        for path in sorted((root / owner).rglob("*.py"))
        for line, name in imported_top_levels(path)
        if name in forbidden
    ]


@pytest.mark.parametrize("owner", ("common",) + PAPERS)
def test_package_imports_only_common_and_third_party(owner):
    assert (ROOT / owner / "__init__.py").is_file(), f"{owner}/ is not a package"
    assert violations(owner) == []


def test_checker_catches_violations(tmp_path):
    (tmp_path / "ivgt").mkdir()
    (tmp_path / "ivgt" / "model.py").write_text("import os\nimport common.cameras\nfrom vlm3.data import x\n")
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "m.py").write_text("from benchmarks import perf\nimport ide3d\n")
    assert violations("ivgt", tmp_path) == ["ivgt/model.py:3 imports vlm3"]
    assert violations("common", tmp_path) == ["common/m.py:1 imports benchmarks", "common/m.py:2 imports ide3d"]
