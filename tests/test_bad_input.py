"""Bad input, table-driven: each row is one wrong file, field or flag and the one line that names it.

DESIGN "Bad input": a clear error naming the file or field and what was expected, raised before any
work is done. Readers and loaders raise a ValueError (DatasetError, CheckpointError, ConfigError);
entry points print `<prog>: error: <that line>` and exit 2, without a traceback (unless
PAPERS3D_TRACEBACK is set), and write nothing.

- CALL_ROWS: (id, function of (inputs, tmp), exception type, expected substring)
- CLI_ROWS: ("package.module", argv, expected substring); argv and the substring are templates
  over the `inputs` paths, `{out}` is the row's own output path, which must not exist afterwards.
  They cover the demos (each wrong value of the shared demo flags in every image demo), the train
  and evaluate entry points, each package's `reproduce` (flags, output folders, the data root) and
  the `benchmarks` command lines (`benchmarks.run`, `.leaderboard`, `.perf`).
Every CLI row fails in argument, config or file validation, before any model is built or any data
generated, so that the table stays fast; two rows also run as real `python -m` processes.
The endogsim rows live with endogsim.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from common.checkpoint import check_weights_folder, load_optimizer_state, load_safetensors
from common.config import ConfigError
from common.datasets import NYUv2Folder, Sample, io, read_endonerf, read_image_folder, read_scene, write_scene
from common.datasets.scene_format import write_index
from common.errors import CheckpointError, DatasetError
from common.metrics import depth_metrics, exact_match, mean_relative_accuracy
from common.results import read_results
from common.tests import datasets_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]
PICKLE_BYTES = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."  # pickle.dumps({"a": 1}, protocol=2)
H, W = 16, 16


# -- inputs shared by the rows ------------------------------------------------------------------


def _truncated_safetensors(path: Path) -> None:
    save_file({"w": torch.zeros(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scene_sample(v: int = 2) -> Sample:
    depth = torch.full((v, H, W), 2.0)
    return Sample(
        images=torch.rand(v, 3, H, W),
        K=torch.tensor([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]).repeat(v, 1, 1),
        w2c=torch.eye(4).repeat(v, 1, 1),
        depth=depth,
        valid=depth > 0,
        scene_id="s0",
        view_names=[f"{i:05d}" for i in range(v)],
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad_input")
    p = {"root": d, "missing": d / "missing"}
    p["img"] = d / "img.png"
    fx.rgb(p["img"], H, W)
    p["images"] = d / "images"
    fx.rgb(p["images"] / "a.png", H, W)
    fx.rgb(p["images"] / "b.png", H, W, seed=1)
    p["empty"] = d / "empty"
    p["empty"].mkdir()
    p["gray8"] = d / "depth8.png"
    fx.gray(p["gray8"], np.full((H, W), 200))
    p["rgbdepth"] = d / "depth_rgb.png"
    fx.rgb(p["rgbdepth"], H, W)
    p["broken"] = d / "broken.png"
    fx.corrupt(p["broken"])
    p["bad_json"] = d / "bad.json"
    p["bad_json"].write_text("{not json")
    p["K3"] = d / "K3.txt"
    p["K3"].write_text("500 500 320")
    p["Kneg"] = d / "Kneg.txt"
    p["Kneg"].write_text("-500 500 320 240")
    # Weights: a truncated safetensors file, a pickle renamed .safetensors, folders of pickled weights.
    p["trunc_st"] = d / "trunc.safetensors"
    _truncated_safetensors(p["trunc_st"])
    p["pickled_st"] = d / "pickled.safetensors"
    p["pickled_st"].write_bytes(PICKLE_BYTES)
    p["ivgt_trunc"] = d / "ivgt_trunc"
    p["ivgt_trunc"].mkdir()
    (p["ivgt_trunc"] / "config.json").write_text(json.dumps({"_class_name": "IVGT"}))
    _truncated_safetensors(p["ivgt_trunc"] / "diffusion_pytorch_model.safetensors")
    p["ivgt_bin"] = d / "ivgt_bin"
    p["ivgt_bin"].mkdir()
    (p["ivgt_bin"] / "config.json").write_text(json.dumps({"_class_name": "IVGT"}))
    (p["ivgt_bin"] / "diffusion_pytorch_model.bin").write_bytes(PICKLE_BYTES)
    p["vggt_pt_dir"] = d / "vggt_pt"  # VGGT-1B's older pickled release, model.pt
    p["vggt_pt_dir"].mkdir()
    p["vggt_pt"] = p["vggt_pt_dir"] / "model.pt"
    p["vggt_pt"].write_bytes(PICKLE_BYTES)
    p["hf_bin"] = d / "hf_bin"  # a transformers folder with pickled weights only
    p["hf_bin"].mkdir()
    (p["hf_bin"] / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    (p["hf_bin"] / "preprocessor_config.json").write_text("{}")
    (p["hf_bin"] / "vlm3_settings.json").write_text("{}")
    (p["hf_bin"] / "pytorch_model.bin").write_bytes(PICKLE_BYTES)
    p["hf_trunc"] = d / "hf_trunc"
    shutil.copytree(p["hf_bin"], p["hf_trunc"])
    (p["hf_trunc"] / "pytorch_model.bin").unlink()
    _truncated_safetensors(p["hf_trunc"] / "model.safetensors")
    p["g2vlm_bin"] = d / "g2vlm_bin"
    (p["g2vlm_bin"] / "language_model").mkdir(parents=True)
    (p["g2vlm_bin"] / "geometry").mkdir()
    (p["g2vlm_bin"] / "g2vlm.json").write_text(json.dumps({"format": "g2vlm", "version": 1}))
    (p["g2vlm_bin"] / "language_model" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (p["g2vlm_bin"] / "language_model" / "pytorch_model.bin").write_bytes(PICKLE_BYTES)
    (p["g2vlm_bin"] / "geometry" / "config.json").write_text(json.dumps({"image_size": 16}))
    # A valid scene of the project's format (rows copy it and break one thing).
    p["scene"] = write_scene(d / "scene", _scene_sample())
    # Output and data paths for the reproduce and benchmark entry points.
    p["file"] = d / "a_file.txt"
    p["file"].write_text("not a folder")
    p["bench"] = d / "bench"  # a synthetic root of one scene per split
    for split in ("train", "test"):
        shutil.copytree(p["scene"], p["bench"] / split / "s0")
        write_index(p["bench"] / split, ["s0"])
    p["bad_index"] = d / "bad_index"  # train/index.json is not JSON
    (p["bad_index"] / "train").mkdir(parents=True)
    (p["bad_index"] / "train" / "index.json").write_text("{not json")
    p["lost_scene"] = d / "lost_scene"  # train/index.json lists a scene that is not there
    (p["lost_scene"] / "train").mkdir(parents=True)
    write_index(p["lost_scene"] / "train", ["s9"])
    p["results_bad"] = d / "results_bad"  # a results.json whose methods are a list
    (p["results_bad"] / "ivgt").mkdir(parents=True)
    (p["results_bad"] / "ivgt" / "results.json").write_text(json.dumps({
        "paper": "ivgt", "ours": "ivgt", "data": {"name": "s", "split": "test", "scenes": 1, "seed": 0},
        "metrics": {"m": {"higher_is_better": True}}, "methods": ["ivgt"],
    }))
    p["results_badjson"] = d / "results_badjson"
    (p["results_badjson"] / "vlm3").mkdir(parents=True)
    (p["results_badjson"] / "vlm3" / "results.json").write_text("{not json")
    p["vlm3_runs"] = d / "vlm3_runs"  # a finished-looking run whose config.json is not JSON (--reuse)
    (p["vlm3_runs"] / "vlm3" / "checkpoint").mkdir(parents=True)
    (p["vlm3_runs"] / "vlm3" / "checkpoint" / "trainer_state.json").write_text(json.dumps({"step": 3}))
    (p["vlm3_runs"] / "vlm3" / "config.json").write_text("{not json")
    for pkg in ("ivgt", "vlm3", "depthvlm", "ide3d", "g2vlm"):
        p[f"{pkg}_yaml"] = ROOT / pkg / "configs" / "tiny.yaml"
    return p


def _scene_copy(p, tmp, edit_meta=None, files=None) -> Path:
    """A copy of the valid scene with scene.json edited by `edit_meta` and files replaced."""
    scene = tmp / "scene"
    shutil.copytree(p["scene"], scene)
    if edit_meta is not None:
        meta = json.loads((scene / "scene.json").read_text())
        edit_meta(meta)
        (scene / "scene.json").write_text(json.dumps(meta))
    for name, writer in (files or {}).items():
        writer(scene / name)
    return scene


def _set(key, value):
    return lambda meta: meta.update({key: value})


def _view0(key, value):
    return lambda meta: meta["views"][0].update({key: value})


def _nyu(p, tmp, depth_writer=None, **kwargs):
    root = tmp / "nyu"
    fx.rgb(root / "rgb" / "0001.png", H, W)
    (depth_writer or (lambda f: fx.u16(f, np.full((H, W), 1500))))(root / "depth" / "0001.png")
    return NYUv2Folder(root, **kwargs)


def _endonerf(p, tmp, depth_writer=None, depth_scale=1.0):
    clip = tmp / "clip"
    for i in range(2):
        fx.rgb(clip / "images" / f"{i:06d}.png", H, W, seed=i)
        (depth_writer or (lambda f: fx.gray(f, np.full((H, W), 50))))(clip / "depth" / f"{i:06d}.png")
        fx.gray(clip / "masks" / f"{i:06d}.png", np.zeros((H, W)))
    rows = np.concatenate([np.eye(3), np.zeros((3, 1)), [[H], [W], [20.0]]], axis=1)
    np.save(clip / "poses_bounds.npy", np.tile(np.concatenate([rows.reshape(-1), [0.1, 10.0]]), (2, 1)))
    return read_endonerf(clip, depth_scale=depth_scale)


def _config(pkg: str, *overrides):
    return lambda p, tmp: importlib.import_module(f"{pkg}.config").load_config(
        p[f"{pkg}_yaml"], list(overrides)
    )


def _ivgt_resume_from_old_checkpoint(p, tmp):
    from ivgt.train import _load_checkpoint

    ck = tmp / "checkpoint"
    ck.mkdir()
    (ck / "trainer_state.pt").write_bytes(PICKLE_BYTES)  # what an older version wrote
    model = torch.nn.Linear(2, 2)
    _load_checkpoint(model, torch.optim.AdamW(model.parameters()), ck)


def _results_file(tmp, **fields) -> Path:
    results = {
        "paper": "ivgt", "ours": "ivgt", "data": {"name": "s", "split": "test", "scenes": 1, "seed": 0},
        "metrics": {"m": {"higher_is_better": True}}, "methods": {"ivgt": {"m": 1.0}}, **fields,
    }
    (tmp / "results.json").write_text(json.dumps(results))
    return tmp / "results.json"


def _perf_notes(tmp, report: dict):
    from benchmarks.run import paper_scale_notes

    (tmp / "ivgt.json").write_text(json.dumps(report))
    return paper_scale_notes(tmp, ["ivgt"])


def _load_model(module: str, fn: str, key: str):
    return lambda p, tmp: getattr(importlib.import_module(module), fn)(p[key])


CALL_ROWS = [
    # depth PNGs: 8-bit or RGB is never read as metres / 1000
    (
        "depth-png-8bit",
        lambda p, t: io.read_depth_png(p["gray8"], 1000.0),
        DatasetError,
        "{gray8}: expected a 16-bit single-channel PNG",
    ),
    (
        "depth-png-rgb",
        lambda p, t: io.read_depth_png(p["rgbdepth"], 1000.0),
        DatasetError,
        "{rgbdepth}: expected a 16-bit single-channel PNG",
    ),
    (
        "depth-png-scale-0",
        lambda p, t: io.read_depth_png(p["gray8"], 0),
        DatasetError,
        "depth scale: expected a number > 0",
    ),
    (
        "scene-depth-8bit",
        lambda p, t: read_scene(
            _scene_copy(p, t, files={"depth/00000.png": lambda f: fx.gray(f, np.full((H, W), 9))})
        ),
        DatasetError,
        "00000.png: expected a 16-bit single-channel PNG",
    ),
    (
        "scene-depth_scale-0",
        lambda p, t: read_scene(_scene_copy(p, t, _set("depth_scale", 0))),
        DatasetError,
        "scene.json: field 'depth_scale': expected a number > 0",
    ),
    (
        "scene-depth_scale-negative",
        lambda p, t: read_scene(_scene_copy(p, t, _set("depth_scale", -1000))),
        DatasetError,
        "field 'depth_scale': expected a number > 0 (depth = PNG value / scale), got -1000",
    ),
    (
        "scene-depth_scale-string",
        lambda p, t: read_scene(_scene_copy(p, t, _set("depth_scale", "mm"))),
        DatasetError,
        "field 'depth_scale': expected a number > 0",
    ),
    (
        "scene-format",
        lambda p, t: read_scene(_scene_copy(p, t, _set("format", "nerf"))),
        DatasetError,
        "scene.json: field 'format': expected",
    ),
    (
        "scene-K-shape",
        lambda p, t: read_scene(_scene_copy(p, t, _view0("K", [[1, 0], [0, 1]]))),
        DatasetError,
        "field 'K': expected a finite 3x3 matrix",
    ),
    (
        "scene-depth-size",
        lambda p, t: read_scene(
            _scene_copy(p, t, files={"depth/00000.png": lambda f: fx.u16(f, np.ones((H + 2, W)))})
        ),
        DatasetError,
        "00000.png: expected size (H, W) = (16, 16), got (18, 16)",
    ),
    (
        "scene-rgb-corrupt",
        lambda p, t: read_scene(_scene_copy(p, t, files={"rgb/00000.png": fx.corrupt})),
        DatasetError,
        "00000.png: cannot decode image",
    ),
    (
        "nyu-depth_scale-0",
        lambda p, t: _nyu(p, t, depth_scale=0),
        DatasetError,
        "depth_scale: expected a number > 0",
    ),
    (
        "nyu-depth_scale-negative",
        lambda p, t: _nyu(p, t, depth_scale=-1.0),
        DatasetError,
        "depth_scale: expected a number > 0",
    ),
    (
        "nyu-depth-8bit",
        lambda p, t: _nyu(p, t, lambda f: fx.gray(f, np.full((H, W), 15)))[0],
        DatasetError,
        "0001.png: expected a 16-bit single-channel PNG",
    ),
    (
        "endonerf-depth-rgb",
        lambda p, t: _endonerf(p, t, lambda f: fx.rgb(f, H, W)),
        DatasetError,
        "000000.png: expected an 8- or 16-bit single-channel PNG",
    ),
    (
        "endonerf-depth_scale-0",
        lambda p, t: _endonerf(p, t, depth_scale=0.0),
        DatasetError,
        "clip: depth_scale: expected a number > 0",
    ),
    ("rgb-missing", lambda p, t: io.read_rgb(p["missing"]), DatasetError, "{missing}: file not found"),
    ("rgb-corrupt", lambda p, t: io.read_rgb(p["broken"]), DatasetError, "{broken}: cannot decode image"),
    ("json-invalid", lambda p, t: io.read_json(p["bad_json"]), DatasetError, "{bad_json}: not valid JSON"),
    (
        "intrinsics-3-numbers",
        lambda p, t: io.read_intrinsics_txt(p["K3"]),
        DatasetError,
        "{K3}: expected 'fx fy cx cy' (4 numbers) or a 3x3 matrix (9 numbers), got 3",
    ),
    (
        "intrinsics-negative-focal",
        lambda p, t: io.read_intrinsics_txt(p["Kneg"]),
        DatasetError,
        "{Kneg}: expected finite intrinsics with positive focal lengths",
    ),
    (
        "image-folder-empty",
        lambda p, t: read_image_folder(p["empty"]),
        DatasetError,
        "{empty}: no image files",
    ),
    # weights: safetensors only, a bad file named
    (
        "safetensors-truncated",
        lambda p, t: load_safetensors(p["trunc_st"]),
        CheckpointError,
        "{trunc_st}: not a readable safetensors file",
    ),
    (
        "safetensors-pickled",
        lambda p, t: load_safetensors(p["pickled_st"]),
        CheckpointError,
        "{pickled_st}: not a readable safetensors file",
    ),
    (
        "optimizer-state-truncated",
        lambda p, t: load_optimizer_state(
            torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()), p["trunc_st"]
        ),
        CheckpointError,
        "{trunc_st}: not a readable safetensors file",
    ),
    (
        "weights-folder-only-bin",
        lambda p, t: check_weights_folder(p["hf_bin"]),
        CheckpointError,
        "{hf_bin}: no *.safetensors weights in the model folder; found pickled weights ['pytorch_model.bin']",
    ),
    (
        "ivgt-load-truncated",
        lambda p, t: importlib.import_module("ivgt.model").IVGT.load(p["ivgt_trunc"]),
        CheckpointError,
        "diffusion_pytorch_model.safetensors: not a readable safetensors file",
    ),
    (
        "ivgt-load-pickled",
        lambda p, t: importlib.import_module("ivgt.model").IVGT.load(p["ivgt_bin"]),
        CheckpointError,
        "{ivgt_bin}: no *.safetensors weights in the model folder; found pickled weights",
    ),
    (
        "ivgt-vggt-folder-only-pickled",
        lambda p, t: importlib.import_module("ivgt.vggt_weights").vggt_weights_file(p["vggt_pt_dir"]),
        CheckpointError,
        "{vggt_pt_dir}: no model.safetensors in the folder; found pickled weights ['model.pt'], which are not loaded",
    ),
    (
        "ivgt-resume-old-pickled-state",
        _ivgt_resume_from_old_checkpoint,
        CheckpointError,
        "checkpoint: no trainer_state.json (a checkpoint of an older version holds a pickled",
    ),
    (
        "vlm3-from_pretrained-pickled",
        lambda p, t: importlib.import_module("vlm3.model").VLM3.from_pretrained(p["hf_bin"]),
        CheckpointError,
        "{hf_bin}: no *.safetensors weights",
    ),
    (
        "vlm3-from_pretrained-truncated",
        lambda p, t: importlib.import_module("vlm3.model").VLM3.from_pretrained(p["hf_trunc"]),
        CheckpointError,
        "model.safetensors: not a readable safetensors file",
    ),
    (
        "depthvlm-load-pickled",
        _load_model("depthvlm.model", "load_pretrained", "hf_bin"),
        CheckpointError,
        "{hf_bin}: no *.safetensors weights",
    ),
    (
        "ide3d-load-pickled",
        _load_model("ide3d.model", "load_pretrained", "hf_bin"),
        CheckpointError,
        "{hf_bin}: no *.safetensors weights",
    ),
    (
        "g2vlm-load-pickled",
        lambda p, t: importlib.import_module("g2vlm.model").G2VLM.from_pretrained(p["g2vlm_bin"]),
        CheckpointError,
        "language_model: no *.safetensors weights",
    ),
    # training configs: values of the right type that cannot work, named by their dotted key
    (
        "ivgt-steps",
        _config("ivgt", "train.steps=-5"),
        ConfigError,
        "train.steps: expected an int >= 1, got -5",
    ),
    (
        "ivgt-checkpoint_every",
        _config("ivgt", "train.checkpoint_every=0"),
        ConfigError,
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    ("ivgt-lr", _config("ivgt", "train.lr=0"), ConfigError, "train.lr: expected a number > 0, got 0.0"),
    (
        "ivgt-log_every",
        _config("ivgt", "train.log_every=0"),
        ConfigError,
        "train.log_every: expected an int >= 1",
    ),
    (
        "ivgt-image_size",
        _config("ivgt", "model.image_size=[30, 30]"),
        ConfigError,
        "model.image_size: expected [H, W], multiples of model.patch_size (8)",
    ),
    ("ivgt-typo", _config("ivgt", "train.stpes=3"), ConfigError, "unknown key 'train.stpes'"),
    (
        "ivgt-type",
        _config("ivgt", "train.steps=many"),
        ConfigError,
        "key 'train.steps' expects int, got 'many'",
    ),
    (
        "vlm3-steps",
        _config("vlm3", "train.steps=-5"),
        ConfigError,
        "train.steps: expected an int >= 1, got -5",
    ),
    (
        "vlm3-checkpoint_every",
        _config("vlm3", "train.checkpoint_every=0"),
        ConfigError,
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "vlm3-batch_size",
        _config("vlm3", "train.batch_size=0"),
        ConfigError,
        "train.batch_size: expected an int >= 1, got 0",
    ),
    (
        "vlm3-lr",
        _config("vlm3", "train.lr=-0.001"),
        ConfigError,
        "train.lr: expected a number > 0, got -0.001",
    ),
    (
        "vlm3-depth_target",
        _config("vlm3", "data.depth_target=depth"),
        ConfigError,
        "data.depth_target: expected 'distance' or 'z', got 'depth'",
    ),
    (
        "depthvlm-checkpoint_every",
        _config("depthvlm", "train.checkpoint_every=0"),
        ConfigError,
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "depthvlm-stage-steps",
        _config("depthvlm", "train.stage1.steps=-5"),
        ConfigError,
        "train.stage1.steps: expected an int >= 0, got -5",
    ),
    (
        "depthvlm-stage-lr",
        _config("depthvlm", "train.stage2.lr=0"),
        ConfigError,
        "train.stage2.lr: expected a number > 0, got 0.0",
    ),
    (
        "depthvlm-batch_size",
        _config("depthvlm", "train.stage1.batch_size=0"),
        ConfigError,
        "train.stage1.batch_size: expected an int >= 1, got 0",
    ),
    (
        "depthvlm-log_every",
        _config("depthvlm", "train.log_every=0"),
        ConfigError,
        "train.log_every: expected an int >= 1, got 0",
    ),
    (
        "ide3d-steps",
        _config("ide3d", "train.steps=-5"),
        ConfigError,
        "train.steps: expected an int >= 1, got -5",
    ),
    ("ide3d-lr", _config("ide3d", "train.lr=0"), ConfigError, "train.lr: expected a number > 0, got 0.0"),
    (
        "g2vlm-checkpoint_every",
        _config("g2vlm", "train.checkpoint_every=0"),
        ConfigError,
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "g2vlm-stage-lr",
        _config("g2vlm", "train.stage1.lr=-1"),
        ConfigError,
        "train.stage1.lr: expected a number > 0, got -1.0",
    ),
    # metrics
    (
        "mra-lengths",
        lambda p, t: mean_relative_accuracy([1.0, 2.0], [1.0, 2.0, 3.0]),
        ValueError,
        "pred and gt: expected two sequences of the same non-zero length, got 2 and 3",
    ),
    (
        "mra-sequence-vs-number",
        lambda p, t: mean_relative_accuracy([1.0, 2.0], 2.0),
        ValueError,
        "got 2 and a single number",
    ),
    (
        "mra-gt-zero",
        lambda p, t: mean_relative_accuracy(1.0, 0.0),
        ValueError,
        "gt: must be finite and non-zero",
    ),
    (
        "depth-metrics-shapes",
        lambda p, t: depth_metrics(np.ones((2, 3)), np.ones((3, 2))),
        ValueError,
        "pred",
    ),
    (
        "exact-match-no-answers",
        lambda p, t: exact_match("two", []),
        ValueError,
        "answers: expected at least one reference answer",
    ),
    # results.json of another schema, and a perf report the leaderboard quotes
    (
        "results-ci95-not-object",
        lambda p, t: read_results(_results_file(t, ci95={"ivgt": [0.1, 0.2]})),
        DatasetError,
        "results.json: field 'ci95.ivgt': expected an object of {{metric: [low, high]}}",
    ),
    (
        "results-ours-not-a-name",
        lambda p, t: read_results(_results_file(t, ours=["ivgt"])),
        DatasetError,
        "results.json: field 'ours': expected a name (string), got ['ivgt']",
    ),
    (
        "perf-report-notes",
        lambda p, t: _perf_notes(t, {"notes": "paper scale: 1 B"}),
        ValueError,
        "ivgt.json: field 'notes': expected a list of strings",
    ),
]


@pytest.mark.parametrize("fn, exc, expected", [pytest.param(*r[1:], id=r[0]) for r in CALL_ROWS])
def test_call_row(fn, exc, expected, inputs, tmp_path):
    with pytest.raises(exc) as info:
        fn(inputs, tmp_path)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert expected.format(**inputs) in message, message


# -- entry points -------------------------------------------------------------------------------

CLI_ROWS = [
    # depthvlm.demo: --K and --focal are checked before the model is loaded
    (
        "depthvlm.demo",
        ["--image", "{img}", "--K", "0,500,8,8", "--model", "{missing}", "--out", "{out}"],
        "--K '0,500,8,8': expected finite fx,fy,cx,cy with focal lengths fx, fy > 0",
    ),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--K=-500,500,8,8", "--model", "{missing}", "--out", "{out}"],
        "--K '-500,500,8,8': expected finite fx,fy,cx,cy with focal lengths fx, fy > 0",
    ),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--K", "500,500,8", "--model", "{missing}", "--out", "{out}"],
        "--K '500,500,8': expected four numbers fx,fy,cx,cy",
    ),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--focal", "0", "--model", "{missing}", "--out", "{out}"],
        "--focal: expected a canonical focal length > 0",
    ),
    (
        "depthvlm.demo",
        ["--image", "{missing}", "--model", "{missing}", "--out", "{out}"],
        "{missing}: file not found",
    ),
    (
        "depthvlm.demo",
        ["--image", "{broken}", "--model", "{missing}", "--out", "{out}"],
        "{broken}: cannot decode",
    ),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--model", "{missing}", "--out", "{out}"],
        "{missing}: no config.json",
    ),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--model", "{hf_bin}", "--out", "{out}"],
        "{hf_bin}: no *.safetensors weights",
    ),
    (
        "depthvlm.train",
        ["train.checkpoint_every=0", "out_dir={out}"],
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    ("depthvlm.evaluate", ["--model", "{missing}", "--out", "{out}"], "{missing}: no config.json"),
    # ivgt
    (
        "ivgt.train",
        ["train.checkpoint_every=0", "train.output_dir={out}"],
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    ("ivgt.train", ["train.steps=-5", "train.output_dir={out}"], "train.steps: expected an int >= 1, got -5"),
    (
        "ivgt.train",
        ["model.vggt_path={vggt_pt}", "train.output_dir={out}"],
        "{vggt_pt}: a pickled checkpoint (.pt) is not loaded (no torch.load)",
    ),
    ("ivgt.train", ["--config", "{missing}", "train.output_dir={out}"], "{missing}: config file not found"),
    ("ivgt.demo", ["--images", "{missing}", "--out", "{out}"], "{missing}: --images folder not found"),
    (
        "ivgt.demo",
        ["--images", "{images}", "--out", "{out}", "--mesh-resolution", "0"],
        "--mesh-resolution: expected an int >= 8",
    ),
    ("ivgt.demo", ["--images", "{empty}", "--out", "{out}"], "{empty}: no image files"),
    (
        "ivgt.demo",
        ["--images", "{images}", "--out", "{out}", "--model", "{missing}"],
        "config.json: not found",
    ),
    (
        "ivgt.demo",
        ["--images", "{images}", "--out", "{out}", "--model", "{ivgt_trunc}"],
        "diffusion_pytorch_model.safetensors: not a readable safetensors file",
    ),
    ("ivgt.evaluate", ["--model", "{ivgt_bin}", "--out", "{out}"], "{ivgt_bin}: no *.safetensors weights"),
    (
        "ivgt.evaluate",
        ["--model", "{missing}", "--scenes", "0", "--out", "{out}"],
        "--scenes: expected an int >= 1",
    ),
    # vlm3
    (
        "vlm3.train",
        ["train.checkpoint_every=0", "train.out_dir={out}"],
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "depth at 3,4", "--K", "0,1,2,3", "--model", "{hf_bin}"],
        "--K '0,1,2,3': expected finite fx,fy,cx,cy with focal lengths fx, fy > 0",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "how deep", "--model", "{missing}"],
        "--ask 'how deep': expected 'depth at X,Y'",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "match 1,2", "--model", "{missing}"],
        "--ask 'match' needs --image2",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "depth at 3,4", "--fov", "200", "--model", "{missing}"],
        "--fov 200: expected a horizontal field of view in (0, 180) degrees",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "depth at 3,4", "--fov", "60", "--model", "{missing}"],
        "vlm3_settings.json: not found",
    ),
    (
        "vlm3.demo",
        ["--image", "{img}", "--ask", "depth at 3,4", "--fov", "60", "--model", "{hf_bin}"],
        "{hf_bin}: no *.safetensors weights",
    ),
    ("vlm3.evaluate", ["--checkpoint", "{missing}", "--out", "{out}"], "config.json: not found"),
    # the experiments that left the product (vlm3.diagnostics): one line saying where they went
    (
        "vlm3.train",
        ["data.turn_pairs=0.5", "train.out_dir={out}"],
        "'data.turn_pairs' is no longer a config setting (an experiment, not the paper's); it moved to "
        "vlm3.diagnostics: python -m vlm3.diagnostics.rendered --turn-pairs P",
    ),
    ("vlm3.evaluate", ["--baseline", "--turned"], "unrecognized arguments: --turned"),
    (
        "vlm3.diagnostics.two_view",
        ["--baseline", "--turned", "--shifted", "4"],
        "--turned and --shifted are separate diagnostics; give one",
    ),
    ("vlm3.diagnostics.two_view", ["--baseline", "--shifted", "-1"], "--shifted: expected an int >= 0 (pixels), got -1"),
    ("vlm3.diagnostics.probe", ["--task", "moved", "--yaw", "9,3"], "--yaw '9,3': expected LO,HI degrees with 0 <= LO <= HI"),
    # ide3d
    (
        "ide3d.train",
        ["train.checkpoint_every=0", "train.out_dir={out}"],
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "ide3d.demo",
        ["--images", "{missing}", "--ask", "the red box", "--out", "{out}"],
        "{missing}: --images folder not found",
    ),
    (
        "ide3d.demo",
        ["--images", "{images}", "--ask", "the red box", "--device", "tpu0", "--out", "{out}"],
        "--device 'tpu0': expected a torch device",
    ),
    (
        "ide3d.demo",
        ["--images", "{images}", "--ask", "the red box", "--num-frames", "1", "--out", "{out}"],
        "--num-frames: expected >= 2, got 1",
    ),
    (
        "ide3d.demo",
        ["--images", "{images}", "--ask", "x", "--model", "{hf_bin}", "--out", "{out}"],
        "{hf_bin}: no *.safetensors weights",
    ),
    # g2vlm
    (
        "g2vlm.train",
        ["train.checkpoint_every=0", "train.out_dir={out}"],
        "train.checkpoint_every: expected an int >= 1, got 0",
    ),
    (
        "g2vlm.demo",
        ["--images", "{images}", "--ask", "how many?", "--device", "gpu", "--out", "{out}"],
        "--device 'gpu': expected a torch device",
    ),
    (
        "g2vlm.demo",
        ["--images", "{images}", "--ask", "how many?", "--threads", "-1", "--out", "{out}"],
        "--threads: expected an int >= 0",
    ),
    (
        "g2vlm.demo",
        ["--images", "{images}", "--ask", "how many?", "--model", "{missing}", "--out", "{out}"],
        "not a G2VLM folder",
    ),
    (
        "g2vlm.demo",
        ["--images", "{images}", "--ask", "q", "--K", "0,1,2,3", "--model", "{g2vlm_bin}", "--out", "{out}"],
        "--K '0,1,2,3': expected finite fx,fy,cx,cy",
    ),
    (
        "g2vlm.demo",
        ["--images", "{images}", "--ask", "q", "--model", "{g2vlm_bin}", "--out", "{out}"],
        "language_model: no *.safetensors weights",
    ),
    # reproduce: flags, output folders and the data root, checked before any data is generated or
    # any model trained
    ("ivgt.reproduce", ["--results", "{file}"], "--results {file}: is a file; expected a folder"),
    (
        "ivgt.reproduce",
        ["--results", "{out}", "train.output_dir={file}/run"],
        "train.output_dir {file}/run: {file} is a file",
    ),
    (
        "ivgt.reproduce",
        ["--results", "{out}", "train.data_root={file}"],
        "train.data_root {file}: is a file; expected a folder of synthetic splits",
    ),
    (
        "ivgt.reproduce",
        ["--results", "{out}", "train.data_root={bad_index}"],
        "{bad_index}/train/index.json: not valid JSON",
    ),
    (
        "ivgt.reproduce",
        ["--results", "{out}", "--skip-train", "train.output_dir={empty}"],
        "{empty}/model/config.json: not found; expected an IVGT checkpoint folder",
    ),
    ("ivgt.reproduce", ["--results", "{out}", "--scenes", "0"], "--scenes: expected an int >= 1, got 0"),
    ("depthvlm.reproduce", ["--results", "{file}"], "--results {file}: is a file"),
    ("depthvlm.reproduce", ["--results", "{out}", "out_dir={file}"], "out_dir {file}: is a file"),
    (
        "depthvlm.reproduce",
        ["--results", "{out}", "data.root={lost_scene}"],
        "{lost_scene}/train/s9: scene listed in index.json has no scene.json",
    ),
    (
        "depthvlm.reproduce",
        ["--results", "{out}", "data.source=nyu_folder", "data.root={missing}"],
        "data.root {missing}: folder not found; expected the nyu_folder dataset",
    ),
    ("vlm3.reproduce", ["--out", "{file}"], "--out {file}: is a file"),
    ("vlm3.reproduce", ["--out", "{out}", "--seed", "-1"], "--seed: expected an int >= 0, got -1"),
    ("vlm3.reproduce", ["--out", "{out}", "--jobs", "0"], "--jobs: expected an int >= 1, got 0"),
    (
        "vlm3.reproduce",
        ["--out", "{out}", "data.root={file}"],
        "data.root {file}: is a file; expected a folder of synthetic splits",
    ),
    (
        "vlm3.reproduce",
        ["--out", "{vlm3_runs}", "--reuse", "data.root={missing}"],
        "{vlm3_runs}/vlm3/config.json: not valid JSON",
    ),
    ("ide3d.reproduce", ["--jobs", "0"], "--jobs: expected >= 1, got 0"),
    (
        "ide3d.reproduce",
        ["supervision.teacher_path={file}"],
        "supervision.teacher_path {file}: is a file",
    ),
    ("ide3d.reproduce", ["data.root={bad_index}"], "{bad_index}/train/index.json: not valid JSON"),
    (
        "ide3d.reproduce",
        ["data.source=scannet", "data.scannet_root={missing}"],
        "data.scannet_root {missing}: not found",
    ),
    ("g2vlm.reproduce", ["--jobs", "0"], "--jobs: expected >= 1, got 0"),
    ("g2vlm.reproduce", ["data.root={file}"], "data.root {file}: is a file"),
    (
        "g2vlm.reproduce",
        ["data.root={lost_scene}"],
        "{lost_scene}/train/s9: scene listed in index.json has no scene.json",
    ),
    # benchmarks: names, counts, the data root, results folders and output paths
    ("benchmarks.run", ["--tasks", "depth,nosuch", "--out", "{out}"], "--tasks: unknown ['nosuch']"),
    ("benchmarks.run", ["--methods", "nosuch", "--out", "{out}"], "--methods: unknown ['nosuch']"),
    ("benchmarks.run", ["--scenes", "-1", "--out", "{out}"], "--scenes: expected >= 0, got -1"),
    ("benchmarks.run", ["--bootstrap", "5", "--out", "{out}"], "--bootstrap: expected >= 100, got 5"),
    ("benchmarks.run", ["--threads", "-1", "--out", "{out}"], "--threads: expected an int >= 0 (0: torch's default), got -1"),
    ("benchmarks.run", ["--data", "{bench}", "--out", "{file}/lb"], "--out {file}/lb: {file} is a file"),
    (
        "benchmarks.run",
        ["--data", "{missing}", "--out", "{out}"],
        "--data {missing}: no test/index.json; expected the synthetic splits (make data)",
    ),
    ("benchmarks.run", ["--data", "{bad_index}", "--out", "{out}"], "train/index.json: not valid JSON"),
    (
        "benchmarks.run",
        ["--data", "{bench}", "--scenes", "5", "--out", "{out}"],
        "--scenes: expected at most the 1 scenes of {bench}/test, got 5",
    ),
    (
        "benchmarks.leaderboard",
        ["--results", "{missing}", "--out", "{out}"],
        "--results {missing}: folder not found",
    ),
    (
        "benchmarks.leaderboard",
        ["--results", "{results_bad}", "--out", "{out}"],
        "{results_bad}/ivgt/results.json: field 'methods': expected an object, got list",
    ),
    (
        "benchmarks.leaderboard",
        ["--results", "{results_badjson}", "--out", "{out}"],
        "{results_badjson}/vlm3/results.json: not valid JSON",
    ),
    ("benchmarks.leaderboard", ["--results", "{bench}", "--out", "{file}/lb"], "--out {file}/lb: {file} is a file"),
    ("benchmarks.perf.__main__", ["nosuch", "--out", "{out}"], "unknown benchmark(s) ['nosuch']"),
    ("benchmarks.perf.__main__", ["all", "--threads", "-1", "--out", "{out}"], "--threads: expected an int >= 0"),
    ("benchmarks.perf.__main__", ["mpm", "--out", "{file}"], "--out {file}: is a file"),
    # argparse's own errors (common.cli.OneLineParser): an unknown flag, a value of the wrong type, a
    # flag without its value; one line naming the flag, without argparse's usage line
    ("vlm3.train", ["--nosuch", "train.out_dir={out}"], "unrecognized arguments: --nosuch"),
    ("ivgt.train", ["--seed", "x", "train.output_dir={out}"], "argument --seed: invalid int value: 'x'"),
    ("ide3d.reproduce", ["--jobs", "abc"], "argument --jobs: invalid int value: 'abc'"),
    (
        "depthvlm.demo",
        ["--image", "{img}", "--model", "{missing}", "--out", "{out}", "--nosuch"],
        "unrecognized arguments: --nosuch",
    ),
    ("g2vlm.train", ["--stages"], "argument --stages: expected one argument"),
    (
        "benchmarks.run",
        ["--scenes", "many", "--out", "{out}"],
        "argument --scenes: invalid int value: 'many'",
    ),
    ("benchmarks.perf.__main__", ["--out", "{out}"], "the following arguments are required: names"),
]

# The demos' shared flags (common.cli.add_demo_flags), each wrong in every image demo: one line naming
# the flag, before the images are read or any model is looked for.
DEMO_INPUTS = {
    "ivgt.demo": ["--images", "{images}"],
    "depthvlm.demo": ["--image", "{img}"],
    "vlm3.demo": ["--image", "{img}", "--ask", "depth at 1,1"],
    "ide3d.demo": ["--images", "{images}", "--ask", "the red box"],
    "g2vlm.demo": ["--images", "{images}", "--ask", "how many?"],
}
DEMO_FLAG_ROWS = [
    (["--K", "500,500,8"], "--K '500,500,8': expected four numbers fx,fy,cx,cy in pixels"),
    (["--K", "500,nan,8,8"], "--K '500,nan,8,8': expected finite fx,fy,cx,cy with focal lengths fx, fy > 0"),
    (["--fov", "0"], "--fov 0: expected a horizontal field of view in (0, 180) degrees"),
    (["--fov", "180"], "--fov 180: expected a horizontal field of view in (0, 180) degrees"),
    (["--K", "500,500,8,8", "--fov", "60"], "--K and --fov: give one of them"),
    (["--cameras", "{missing}"], "--cameras {missing}: not found; expected a COLMAP model folder"),
    (["--device", "tpu0"], "--device 'tpu0': expected a torch device"),
    (["--threads", "-2"], "--threads: expected an int >= 0 (0: torch's default), got -2"),
    (["--out", "{file}"], "--out {file}: is a file; expected a folder"),
]
CLI_ROWS += [
    (demo, [*inputs, *flags, "--model", "{missing}"] + ([] if "--out" in flags else ["--out", "{out}"]), expected)
    for demo, inputs in DEMO_INPUTS.items()
    for flags, expected in DEMO_FLAG_ROWS
]


def _fill(items, inputs, out):
    return [str(a).format(out=out, **inputs) for a in items]


@pytest.mark.parametrize(
    "module, argv, expected", [pytest.param(*r, id=f"{r[0]}-{i}") for i, r in enumerate(CLI_ROWS)]
)
def test_cli_row(module, argv, expected, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PAPERS3D_TRACEBACK", raising=False)
    main = importlib.import_module(module).main
    out = tmp_path / "out"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(_fill(argv, inputs, out))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2, err
    prog = module.removesuffix(".__main__")
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err and "usage:" not in err
    assert expected.format(out=out, **inputs) in lines[0], lines[0]
    assert not out.exists(), f"{module} wrote {out} before failing"


def test_traceback_on_request(inputs, tmp_path, monkeypatch):
    """PAPERS3D_TRACEBACK=1 keeps the exception (and its traceback) for debugging."""
    from ivgt.train import main

    monkeypatch.setenv("PAPERS3D_TRACEBACK", "1")
    with pytest.raises(ConfigError, match="train.checkpoint_every: expected an int >= 1, got 0"):
        main(["train.checkpoint_every=0", f"train.output_dir={tmp_path / 'out'}"])


@pytest.mark.parametrize(
    "module, argv, expected",
    [
        (
            "depthvlm.demo",
            ["--image", "{img}", "--K", "0,500,8,8", "--model", "{missing}", "--out", "{out}"],
            "--K '0,500,8,8': expected finite",
        ),
        (
            "ivgt.train",
            ["train.checkpoint_every=0", "train.output_dir={out}"],
            "train.checkpoint_every: expected an int",
        ),
        ("ivgt.train", ["--seed", "x", "train.output_dir={out}"], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_cli_process(module, argv, expected, inputs, tmp_path):
    """The same rows as real processes: exit status 2, one line on stderr, nothing written."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PAPERS3D_TRACEBACK"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *_fill(argv, inputs, out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{module}: error: ") and expected in lines[0], proc.stderr
    assert "usage:" not in proc.stderr and not out.exists()
