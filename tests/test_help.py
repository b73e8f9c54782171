"""`--help` of every entry point that is not a demo: usage `python -m <pkg>.<entry>`, the module's
description whole (not cut after its first line), and a help string on every option.

Each runs in-process (`main(["--help"])`, SystemExit 0); the parser is caught as it prints."""

import argparse
import importlib

import pytest

from common.cli import OneLineParser

ENTRY_POINTS = [
    "ivgt.train", "ivgt.evaluate", "ivgt.reproduce",
    "depthvlm.train", "depthvlm.evaluate", "depthvlm.reproduce",
    "endogsim.train", "endogsim.evaluate", "endogsim.reproduce", "endogsim.simulate",
    "endogsim.diagnostics.identifiability", "endogsim.diagnostics.future_frames",
    "ide3d.train", "ide3d.evaluate", "ide3d.reproduce", "ide3d.teacher",
    "vlm3.train", "vlm3.evaluate", "vlm3.reproduce", "vlm3.scaling",
    "vlm3.diagnostics.probe", "vlm3.diagnostics.rendered", "vlm3.diagnostics.two_view", "vlm3.diagnostics.sign_context",
    "g2vlm.train", "g2vlm.evaluate", "g2vlm.reproduce", "g2vlm.diagnostics.object_pooling",
    "g2vlm.diagnostics.grounding",
    "common.synthetic", "benchmarks.run", "benchmarks.leaderboard", "benchmarks.perf",
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help_is_whole(entry, monkeypatch, capsys):
    module = importlib.import_module(entry + (".__main__" if entry in ("common.synthetic", "benchmarks.perf") else ""))
    seen = []
    print_help = OneLineParser.print_help
    monkeypatch.setattr(OneLineParser, "print_help", lambda self, file=None: (seen.append(self), print_help(self, file)))
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0 and len(seen) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m {entry} "), text.splitlines()[0]
    parser = seen[0]
    assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    doc = (module.__doc__ or "").strip()
    assert parser.description and doc.splitlines()[-1].strip() in parser.description, "description cut short"
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions if not a.help]
    assert not missing, f"{entry}: options without help: {missing}"
    flags = {s for a in parser._actions for s in a.option_strings}
    if entry.split(".")[-1] in ("train", "evaluate", "reproduce", "scaling", "probe", "teacher", "rendered", "two_view", "sign_context"):
        assert "--threads" in flags, f"{entry}: no --threads flag"
