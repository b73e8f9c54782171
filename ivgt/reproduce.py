"""`make reproduce-ivgt` = `python -m ivgt.reproduce [--scenes N] [key=value ...]`: generate the
synthetic benchmark if absent, train configs/tiny.yaml, evaluate on the held-out test scenes
(trained, untrained, trivial baseline) and write results/ivgt/results.json, results.md and
pictures (depth and normals beside ground truth, a mesh)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.cli import (OneLineParser, add_threads_flag, check_out_dir, check_synthetic_root, one_line_errors,
                        set_threads)
from common.datasets import SceneDataset
from common.results import git_commit, markdown_table, write_results
from common.synthetic import GENERATOR_VERSION, generate_split
from ivgt.config import load_config
from ivgt.data import canonical_views
from ivgt.evaluate import INPUT_VIEWS, METRICS, TARGET_VIEWS, evaluate, ground_truth
from ivgt.model import IVGT
from ivgt.train import train

PAPER = {  # IVGT's reported numbers (README / tables of arXiv 2605.16258), with their datasets
    "mesh_accuracy": {"value": 0.069, "dataset": "ScanNet (4 scenes, metres)"},
    "mesh_completeness": {"value": 0.051, "dataset": "ScanNet (4 scenes, metres)"},
    "mesh_chamfer": {"value": 0.060, "dataset": "ScanNet (4 scenes, metres)"},
    "mesh_fscore": {"value": 0.647, "dataset": "ScanNet (4 scenes, 5 cm)"},
    "depth_abs_rel": {"value": 0.063, "dataset": "NYUv2 (monocular)"},
    "normal_mean_angle": {"value": 16.6, "dataset": "NYUv2"},
    "nvs_psnr": {"value": 19.74, "dataset": "DL3DV (8 views)"},
    "nvs_ssim": {"value": 0.627, "dataset": "DL3DV (8 views)"},
}


def pictures(model: IVGT, root: str, out: Path, image_size) -> None:
    sample = SceneDataset(root, "test", load=("depth", "normals"))[0]
    batch = canonical_views(sample, INPUT_VIEWS + TARGET_VIEWS, image_size)
    gt = ground_truth(batch, tuple(image_size))
    with torch.no_grad():
        o = model(batch["images"][None, :4])
        scene = model.scene_from_outputs(batch["images"][None, :4], o)
        r = scene.render(o["K"][0, 0], o["w2c"][0, 0], *image_size)
        nv = scene.render(batch["K"][4], batch["w2c"][4], *image_size)
        scene.extract_mesh(64).export(out / "mesh_test0.ply")
    def norm(d):
        d = d.numpy()
        return np.repeat(((d - d.min()) / max(d.max() - d.min(), 1e-6) * 255).astype(np.uint8)[..., None], 3, -1)
    nrm = lambda n: ((n.numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)  # noqa: E731
    img = lambda x: (x.numpy().transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)  # noqa: E731
    row1 = np.concatenate([img(batch["images"][0]), norm(r["depth"]), norm(gt["depth"][0]), nrm(r["normals"]), nrm(gt["normals"][0])], 1)
    row2 = np.concatenate([img(batch["images"][4]), img(nv["rgb"]), np.zeros_like(row1[:, :3 * image_size[1]])], 1)
    Image.fromarray(np.concatenate([row1, row2], 0)).resize((row1.shape[1] * 3, row1.shape[0] * 6), Image.NEAREST).save(out / "test0.png")


def main(argv=None):
    p = OneLineParser("ivgt.reproduce", description=__doc__)
    p.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                   help="YAML config to train (default: configs/tiny.yaml)")
    p.add_argument("--scenes", type=int, default=None, help="test scenes (default: all)")
    p.add_argument("--results", default="results/ivgt", help="folder of results.json, results.md and pictures")
    p.add_argument("--skip-train", action="store_true", help="reuse <train.output_dir>/model")
    add_threads_flag(p)
    p.add_argument("overrides", nargs="*", help="config overrides key=value (train.steps=50)")
    a = p.parse_args(argv)
    t0 = time.time()
    with one_line_errors("ivgt.reproduce"):  # bad settings, paths and data: one line, before any work
        if a.scenes is not None and a.scenes < 1:
            raise ValueError(f"--scenes: expected an int >= 1, got {a.scenes}")
        set_threads(a.threads)
        cfg = load_config(a.config, a.overrides)
        check_out_dir("--results", a.results)
        check_out_dir("train.output_dir", cfg.train.output_dir)
        root = check_synthetic_root("train.data_root", cfg.train.data_root, ("train", "test"))
        for name, src in cfg.train.sources.items():  # splits under data_root are generated below
            if not isinstance(src, dict) or not {"root", "split"} <= set(src):
                raise ValueError(f"train.sources.{name}: expected {{root, split, weight}}, got {src!r}")
            generated = Path(src["root"]) == root and src["split"] in ("train", "test")
            check_synthetic_root(f"train.sources.{name}.root", src["root"], (src["split"],), generate=generated)
        model = IVGT.load(Path(cfg.train.output_dir) / "model") if a.skip_train else None  # --skip-train
    for split, n in (("train", 64), ("test", 32)):
        if not (root / split / "index.json").is_file():
            generate_split(root, split, scenes=n, views=8, size=128, seed=0)
    if model is None:
        model = train(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = IVGT.from_model_config(cfg.model).eval()
    res = evaluate({"ivgt": model, "ivgt-untrained": untrained}, root, "test", a.scenes, image_size=cfg.model.image_size)
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "paper": "ivgt", "ours": "ivgt",
        "data": {"name": "synthetic", "split": "test", "generator_version": GENERATOR_VERSION, "scenes": res["scenes"], "seed": 0},
        "metrics": {m: {"higher_is_better": h} for m, h in METRICS.items()},
        "methods": res["means"],
        "paper_reported": PAPER,
        "environment": {"device": "cuda" if torch.cuda.is_available() else "cpu", "seconds": round(time.time() - t0), "git": git_commit()},
    }
    write_results(out / "results.json", results)
    (out / "results.md").write_text(markdown_table(results) + "\n")
    pictures(model, root, out, tuple(cfg.model.image_size))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
