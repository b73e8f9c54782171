"""EndoGSim's rows of the bad-input table (tests/test_bad_input.py holds the other packages'): every
entry point answers a wrong file, field or flag with one line naming it, exits 2 and writes
nothing; library calls raise one ValueError naming the argument."""

import importlib

import numpy as np
import pytest

from endogsim.decompose import DecompositionError, SupportPlane, fit_support_plane
from endogsim.filling import FillingError, depth_volumes
from endogsim.physics import Material, MPMConfig, PhysicsInputError
from endogsim.refine import RefineConfig, RefineInputError
from endogsim.tests.scene_fixtures import small_clip

CLI_ROWS = [
    ("endogsim.simulate", ["--scene", "{clip}", "--action", "poke", "--frame-dt", "-1", "--out", "{out}"],
     "--frame-dt: expected a positive number, got -1.0"),
    ("endogsim.simulate", ["--scene", "{clip}", "--action", "poke", "--frames", "0", "--out", "{out}"],
     "--frames: expected an int >= 1, got 0"),
    ("endogsim.simulate", ["--scene", "{clip}", "--action", "poke", "--force", "0", "--out", "{out}"],
     "--force: expected a positive number"),
    ("endogsim.simulate", ["--scene", "/nonexistent", "--action", "poke", "--out", "{out}"],
     "/nonexistent: scene directory not found"),
    ("endogsim.simulate", ["--scene", "{tmp}", "--action", "poke", "--out", "{out}"],
     "expected scene.json (a PhysicsScene) or ground_truth.json"),
    ("endogsim.train", ["--data", "/nonexistent", "--out", "{out}"], "/nonexistent: clip folder not found"),
    ("endogsim.train", ["--data", "{clip}", "--out", "{out}", "recon.stepz=3"], "stepz"),
    ("endogsim.evaluate", ["--model", "{tmp}", "--data", "{clip}"], "not a GaussianModel folder"),
    ("endogsim.reproduce", ["--out", "{out}", "--refine-iterations", "-1"], "--refine-iterations: expected >= 0"),
    ("endogsim.reproduce", ["--out", "{out}", "recon.nope=1"], "nope"),
    ("endogsim.reproduce", ["--out", "{out}", "--robustness", "2"], "--robustness: expected 0 or 1, got 2"),
    ("endogsim.reproduce", ["--out", "{file}"], "--out {file}: is a file"),
    ("endogsim.reproduce", ["--out", "{out}", "--data", "{file}"], "--data {file}: is a file"),
    ("endogsim.reproduce", ["--out", "{out}", "--data", "{notclip}"], "--data {notclip}: no ground_truth.json"),
    ("endogsim.reproduce", ["--out", "{out}", "--data", "{badclip}"],
     "{badclip}/ground_truth.json: missing or bad field 'simulation'"),
    ("endogsim.reproduce", ["--out", "{out}", "--data", "{clip}"],
     "--data {clip}: holds a clip with (look, height, width, frames, seed) = ('blocks', 32, 40, 2, 0), the config "
     "asks for ('endoscopy', 128, 160, 16, 0)"),
    ("endogsim.reproduce", ["--out", "{out}", "data.look=cartoon"],
     "data.look: must be one of ('blocks', 'endoscopy'), got 'cartoon'"),
    ("endogsim.demo", ["--clip", "{clip}", "--out", "{out}", "--labels", "liver,brick"], "['brick']"),
]


def _inputs(folder):
    """A file where a folder belongs, a folder that is not a clip, a clip whose ground_truth.json is empty."""
    (folder / "notclip").mkdir(parents=True)
    (folder / "notclip" / "frame.png").write_bytes(b"")
    (folder / "badclip").mkdir()
    (folder / "badclip" / "ground_truth.json").write_text("{}")
    (folder / "a_file.txt").write_text("not a folder")
    return {"file": folder / "a_file.txt", "notclip": folder / "notclip", "badclip": folder / "badclip"}


@pytest.mark.parametrize("module, argv, expected", CLI_ROWS, ids=[f"{m}:{a[-1]}" for m, a, _ in CLI_ROWS])
def test_cli_row(module, argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PAPERS3D_TRACEBACK", raising=False)
    out = tmp_path / "out"
    paths = {"clip": small_clip(), "out": out, "tmp": tmp_path, **_inputs(tmp_path / "inputs")}
    args = [a.format(**paths) for a in argv]
    expected = expected.format(**paths)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"{module}: error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert not out.exists(), f"{module} wrote {out} before failing"


CALL_ROWS = [
    ("Material.E", lambda: Material(E=-1.0), PhysicsInputError, "Material.E"),
    ("Material.nu", lambda: Material(nu=0.5), PhysicsInputError, "Material.nu"),
    ("MPMConfig.dt", lambda: MPMConfig(dt=0.0), PhysicsInputError, "MPMConfig.dt"),
    ("MPMConfig.n_grid", lambda: MPMConfig(n_grid=2), PhysicsInputError, "MPMConfig.n_grid"),
    ("RefineConfig.iterations", lambda: RefineConfig(iterations=-1), RefineInputError, "RefineConfig.iterations"),
    ("RefineConfig.nu_bounds", lambda: RefineConfig(nu_bounds=(0.2, 0.5)), RefineInputError, "nu_bounds"),
    ("support points", lambda: fit_support_plane(np.zeros((5, 2))), DecompositionError, "points: expected [N, 3]"),
    ("support motion", lambda: fit_support_plane(np.zeros((5, 3)), np.zeros(4)), DecompositionError, "motion"),
    ("depth_volumes shape", lambda: depth_volumes(np.zeros((4, 4)), np.eye(3), np.zeros((4, 5)),
                                                  SupportPlane(np.array([0, 0, 1.0]), 0.1), 1),
     FillingError, "depth_volumes: expected depth [H, W] and object_map of the same shape"),
]


@pytest.mark.parametrize("fn, exc, expected", [r[1:] for r in CALL_ROWS], ids=[r[0] for r in CALL_ROWS])
def test_call_row(fn, exc, expected):
    with pytest.raises(exc) as err:
        fn()
    assert expected in str(err.value) and len(str(err.value).splitlines()) == 1
