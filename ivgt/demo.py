"""`python -m ivgt.demo --images DIR --out OUT [--model CKPT]`: any folder of photos (any size,
one or more images) -> mesh.ply + mesh.glb (vertex colours), depth_XX.png and normal_XX.png per
view, cameras.json and a COLMAP text model (cameras.txt, images.txt, points3D.txt).

Without --model a randomly initialised tiny model runs (the pipeline works; the geometry is
meaningless): pass a trained checkpoint, e.g. results/ivgt/run/model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.cameras import write_colmap_text
from common.cli import OneLineParser, one_line_errors
from common.datasets import read_image_folder
from ivgt.config import ModelConfig
from ivgt.model import IVGT
from ivgt.train import set_cpu_threads


def _png(path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def run_demo(images_dir, out_dir, model: IVGT | None = None, mesh_resolution: int = 64, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    sample = read_image_folder(images_dir)  # clear DatasetError: empty folder, undecodable file, mixed sizes
    model = model if model is not None else IVGT.from_model_config(ModelConfig()).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = model.reconstruct(sample.images)
    cams = scene.cameras
    H, W = sample.image_size
    for v in range(sample.num_views):
        r = scene.render(scene.K[v], scene.w2c[v], scene.height, scene.width)
        d = r["depth"].cpu().numpy()
        d = (255 * (d - d.min()) / max(float(d.max() - d.min()), 1e-6)).astype(np.uint8)
        n = ((r["normals"].cpu().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
        _png(out / f"depth_{v:02d}.png", np.array(Image.fromarray(d).resize((W, H), Image.NEAREST)))
        _png(out / f"normal_{v:02d}.png", np.array(Image.fromarray(n).resize((W, H), Image.NEAREST)))
    mesh = scene.extract_mesh(mesh_resolution)
    mesh.export(out / "mesh.ply")
    mesh.export(out / "mesh.glb")
    names = [f"{n}.png" if "." not in n else n for n in sample.view_names]
    write_colmap_text(out, names, cams["K"].cpu(), cams["w2c"].cpu(), H, W)
    info = {"convention": "OpenCV, w2c world-to-camera, world = first camera, normalised units",
            "width": W, "height": H,
            "views": [{"name": n, "K": cams["K"][i].tolist(), "w2c": cams["w2c"][i].tolist()} for i, n in enumerate(names)],
            "mesh": {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "sdf_queries": mesh.metadata.get("sdf_queries")}}
    (out / "cameras.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv=None):
    p = OneLineParser("ivgt.demo", description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--mesh-resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    with one_line_errors("ivgt.demo"):
        if a.mesh_resolution < 8:
            raise ValueError(f"--mesh-resolution: expected an int >= 8 (marching-cubes cells per side), "
                             f"got {a.mesh_resolution}")
        if not Path(a.images).is_dir():
            raise FileNotFoundError(f"{a.images}: --images folder not found")
        set_cpu_threads(1)
        model = IVGT.load(a.model) if a.model else None
        info = run_demo(a.images, a.out, model, a.mesh_resolution, a.seed)
    print(f"wrote {a.out}: {len(info['views'])} views, mesh {info['mesh']['vertices']} vertices")


if __name__ == "__main__":
    main()
