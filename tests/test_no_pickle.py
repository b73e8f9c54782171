"""No pickle anywhere (DESIGN "Models, weights and tokenizers"): every tracked .py file of the repo.

Weights, optimizer and trainer state are safetensors + JSON; a pickle can run code when it is
loaded. The scan looks for the text of pickle loading and saving (`torch.load(`, `torch.save(`,
`import pickle`, `pickle.load`, `weights_only=`) and, through the syntax tree, for
`X.from_pretrained(...)` calls that could load pickled weights: every one must pass
`use_safetensors=True`, except
- configs, tokenizers and processors (`*Config`, `*Tokenizer*`, `*Processor*`), which hold no weights;
- the project's own loaders (a class of the repo that defines `from_pretrained` itself, such as
  `VLM3` or `G2VLM`, or `cls.from_pretrained` inside one), whose bodies are checked in turn.

ALLOWED lists the few places that may keep a pattern, each with its reason; an entry that no longer
matches anything is an error too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
PACKAGES = (
    "common",
    "ivgt",
    "depthvlm",
    "vlm3",
    "ide3d",
    "g2vlm",
    "endogsim",
    "benchmarks",
    "scripts",
    "tests",
)

PATTERNS = (
    "torch.load(",
    "torch.save(",
    "import pickle",
    "from pickle import",
    "pickle.load",
    "weights_only=",
)

# file -> (patterns it may keep, why). Only in-memory round trips: nothing read from or written to disk.
ALLOWED = {
    "common/tests/test_datasets_mixture.py": (
        ("import pickle", "pickle.load"),
        "pickle.loads(pickle.dumps(dataset)) in memory: DataLoader workers receive datasets that way",
    ),
    "common/tests/test_datasets_readers.py": (
        ("import pickle", "pickle.load"),
        "pickle.loads(pickle.dumps(dataset)) in memory: the open HDF5 handle must not travel to workers",
    ),
}


NO_WEIGHTS = re.compile(r"(Config|Tokenizer\w*|TokenizerFast|Processor\w*)$")


def tracked_py_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return sorted(f for f in out.stdout.split() if f != THIS and (ROOT / f).is_file())


def own_loaders(files: list[str]) -> set[str]:
    """Classes of the repo that define `from_pretrained` themselves (their calls are checked inside)."""
    names = set()
    for f in files:
        for node in ast.walk(ast.parse((ROOT / f).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.FunctionDef) and b.name == "from_pretrained" for b in node.body
            ):
                names.add(node.name)
    return names


def unsafe_from_pretrained(path: str, loaders: set[str]) -> list[str]:
    """`file:line receiver.from_pretrained(...)` calls that may load pickled weights."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    bad = []

    def visit(node, cls: str | None):
        if isinstance(node, ast.ClassDef):
            cls = node.name
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "from_pretrained"
        ):
            receiver = ast.unparse(node.func.value)
            last = receiver.rsplit(".", 1)[-1]
            safe = any(
                k.arg == "use_safetensors" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            exempt = (
                NO_WEIGHTS.search(last) is not None
                or "Tokenizer" in receiver
                or last in loaders
                or (last in ("cls", "self") and cls in loaders)
            )
            if not safe and not exempt:
                bad.append(
                    f"{path}:{node.lineno} {receiver}.from_pretrained(...) without use_safetensors=True"
                )
        for child in ast.iter_child_nodes(node):
            visit(child, cls)

    visit(tree, None)
    return bad


def pattern_hits(path: str) -> list[tuple[str, str]]:
    hits = []
    for n, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1):
        for pattern in PATTERNS:
            if pattern in line:
                hits.append((pattern, f"{path}:{n}: {line.strip()}"))
    return hits


FILES = tracked_py_files()
LOADERS = own_loaders(FILES)


def _files_of(package: str) -> list[str]:
    return [f for f in FILES if f.split("/", 1)[0] == package]


@pytest.mark.parametrize(
    "package",
    PACKAGES,
)
def test_no_pickle_in_package(package):
    files = _files_of(package)
    found = []
    for f in files:
        allowed = ALLOWED.get(f, ((), ""))[0]
        found += [where for pattern, where in pattern_hits(f) if pattern not in allowed]
        found += unsafe_from_pretrained(f, LOADERS)
    assert not found, "pickle or pickle-capable loading:\n" + "\n".join(found)


def test_every_tracked_file_is_in_a_scanned_package():
    outside = [f for f in FILES if f.split("/", 1)[0] not in PACKAGES]
    assert not outside, f"add their folder to PACKAGES: {outside}"


def test_allow_list_entries_still_match():
    stale = [
        (f, p)
        for f, (patterns, _) in ALLOWED.items()
        for p in patterns
        if not (ROOT / f).is_file() or p not in (ROOT / f).read_text(encoding="utf-8")
    ]
    assert not stale, f"remove these ALLOWED entries, the pattern is gone: {stale}"


def test_the_scan_catches_what_it_should(tmp_path, monkeypatch):
    """The checks themselves: each forbidden form is found, the safe forms are not."""
    src = (
        "import torch\n"
        "from transformers import AutoTokenizer, Qwen2ForCausalLM, Qwen2Config\n"
        "a = Qwen2ForCausalLM.from_pretrained('x')\n"
        "b = Qwen2ForCausalLM.from_pretrained('x', use_safetensors=True)\n"
        "c = Qwen2Config.from_pretrained('x')\n"
        "d = AutoTokenizer.from_pretrained('x')\n"
        "class Own:\n"
        "    @classmethod\n"
        "    def from_pretrained(cls, p):\n"
        "        return Qwen2ForCausalLM.from_pretrained(p)\n"
        "    @classmethod\n"
        "    def build(cls):\n"
        "        return cls.from_pretrained('y')\n"
        "e = Own.from_pretrained('z')\n"
        "f = torch.lo"
        "ad('w')\n"
    )
    (tmp_path / "m.py").write_text(src)
    import tests.test_no_pickle as me

    monkeypatch.setattr(me, "ROOT", tmp_path)
    loaders = me.own_loaders(["m.py"])
    assert loaders == {"Own"}
    bad = me.unsafe_from_pretrained("m.py", loaders)
    assert [b.split()[0] for b in bad] == ["m.py:3", "m.py:10"], bad
    assert [p for p, _ in me.pattern_hits("m.py")] == ["torch.load("]
