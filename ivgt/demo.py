"""Reconstruct a scene from photos with a trained IVGT: a coloured mesh, depth and normal maps per
view, and the cameras (cameras.json and a COLMAP text model).

    python -m ivgt.demo --images photos/ --out out/
    python -m ivgt.demo --images project/images --out out/          # project/sparse/0 found and used
    python -m ivgt.demo --images photos/ --fov 65 --model results/ivgt/run/model --out out/

`--images` is a folder of photos in any size and orientation: EXIF rotation is applied, and views
of another size or orientation are resized and padded to the most common size, K changed to match
(`common.datasets.read_image_folder`; one line says what it did, found and assumed). Known cameras
(a COLMAP model, cameras.json or LLFF poses_bounds.npy beside or above the photos, or `--cameras`)
replace the predicted ones: K as given, poses scaled to the prediction and the outputs put back in
the cameras' world and units. Without them the world is the first camera and lengths are the
model's normalised units. Each view's maps are rendered from its `--render-views` nearest input
views (default 4; 0: all, whose cost grows as the square of the number of views), the mesh from all.

Writes into --out, named after the inputs, per view at the photo's loaded size (its depth and normal
maps as soon as the view is rendered, the previews once every view's depth range is known): <photo>_depth.png
(16-bit, depth = value / scale with the scale and unit in <photo>_depth.json), <photo>_depth_preview.png
(colour bar), <photo>_normal.png ((n + 1) / 2 of camera-frame normals); <folder>_contact_sheet.png,
<folder>_mesh.ply and <folder>_mesh.glb (vertex colours; the GLB turned y-up for Blender), cameras.json
(the schema `common.datasets.read_image_folder` reads back) and cameras.txt, images.txt,
points3D.txt (COLMAP text, cameras at each photo's full size, named by its file name): pass --out
as --cameras to read the photos back with these cameras.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cameras import invert_pose, transform_points, write_colmap_text
from common.cli import OneLineParser, add_demo_flags, check_demo_flags, check_demo_model, one_line_errors
from common.datasets import Sample, read_image_folder
from common.datasets.folder import source_K
from common.pictures import (depth_range, up_from_cameras, upsample_depth, upsample_normals, write_contact_sheet,
                             write_depth, write_depth_preview, write_mesh, write_normals)
from common.viewer import add_view_flag, view_outputs
from ivgt.model import IVGT

DEFAULT_MODEL = "results/ivgt/run/model"
MAX_SIDE = 640  # photos are loaded at most this large; the backbone sees them at its input size
RENDER_VIEWS = 4  # input views aggregated per rendered view (README, departures); 0: all


def write_view(out: Path, name: str, rendered: dict, K, size, per_unit: float, unit: str) -> dict:
    """<name>_depth.png (16-bit, depth = value / scale in <name>_depth.json, in `unit`) and
    <name>_normal.png ((n + 1) / 2, camera frame) of one render at the model's resolution (camera K
    [3, 3]) warped to the photo's camera at its loaded size (H, W); written as soon as the view is
    rendered. Returns the render's depth (in `unit`) and normals, at the model's resolution, for
    the previews that need every view's depth range."""
    depth = (rendered["depth"] * (rendered["opacity"] > 0.5) / per_unit).cpu()  # [h, w]
    normals = rendered["normals"].cpu()  # [3, h, w]
    write_depth(out / f"{name}_depth.png", upsample_depth(depth, K, size), unit=unit)
    write_normals(out / f"{name}_normal.png", upsample_normals(normals, K, size))
    return {"depth": depth, "normals": normals}


def write_previews(out: Path, names: list, images, small: list, K, size, unit: str, title: str) -> None:
    """<name>_depth_preview.png per view (one colour range for all views, colour bar) and
    <title>_contact_sheet.png, at the photos' loaded size (H, W), from `write_view`'s maps (K [V, 3, 3])."""
    depths = [upsample_depth(m["depth"], K[v], size) for v, m in enumerate(small)]  # [H, W] each
    vmin, vmax = depth_range(depths)
    for name, depth in zip(names, depths):
        write_depth_preview(out / f"{name}_depth_preview.png", depth, vmin, vmax, unit=unit)
    views = [{"name": n, "image": images[v], "depth": depths[v], "normals": upsample_normals(small[v]["normals"], K[v], size)}
             for v, n in enumerate(names)]
    write_contact_sheet(out / f"{title}_contact_sheet.png", views, vmin, vmax, unit=unit, title=f"ivgt.demo: {title}")


def run_demo(images, out_dir, model: IVGT, mesh_resolution: int = 64, seed: int = 0, K=None, fov=None,
             cameras=None, sample: Sample | None = None, progress: bool = False,
             render_views: int = RENDER_VIEWS) -> dict:
    """Reconstruct the photos of folder `images` (or the already read `sample`) and write the
    outputs (module docstring), each view's pictures as soon as it is rendered, every query of a
    view's render aggregated over its `render_views` nearest input views (0: all; the mesh uses
    all); returns what cameras.json holds (with the mesh's size) and "seconds" per stage (read,
    reconstruct, render, mesh)."""
    if render_views < 0:
        raise ValueError(f"--render-views: expected an int >= 0 (0: all views), got {render_views}")
    torch.manual_seed(seed)
    stages, start = {}, time.perf_counter()  # stage -> seconds, returned for the perf benchmark
    if sample is None:
        sample = read_image_folder(images, max_side=MAX_SIDE, K=K, fov=fov, cameras=cameras)
    stages["read"] = time.perf_counter() - start
    ann = sample.annotations
    known_K = not ann["intrinsics_source"].startswith("assumed")  # else the model predicts K
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=sample.num_views + 3, desc="ivgt.demo", unit="step", disable=not progress)
    bar.set_postfix_str("reconstructing")
    start = time.perf_counter()
    scene = model.reconstruct(sample.images, K=sample.K if known_K else None,
                              w2c=sample.w2c if ann["poses_known"] else None)
    stages["reconstruct"] = time.perf_counter() - start
    bar.update()
    cams = scene.cameras
    H, W = sample.image_size
    folder = Path(images).name if images is not None else sample.scene_id
    per_unit, unit = 1.0, "units"  # depth in the model's normalised units ...
    if ann["poses_known"]:  # ... or in the given cameras' units
        per_unit, unit = scene.units_per_given, {"metres": "m"}.get(ann.get("pose_units", "metres"), "units")
    # Each view is rendered and its pictures written at once; only its model-resolution maps are
    # kept, for the previews. Its queries aggregate its k nearest views (IBRNet's source-view
    # selection), so that V views cost O(V k), not O(V^2) as with every view in every query; no
    # colour is rendered (only depth and normals are written).
    start, small, K_model = time.perf_counter(), [], scene.K.cpu()
    for v, name in enumerate(sample.view_names):
        bar.set_postfix_str(f"rendering {name}")
        rendered = scene.render(scene.K[v], scene.w2c[v], scene.height, scene.width, views=render_views, rgb=False)
        small.append(write_view(out, name, rendered, K_model[v], (H, W), per_unit, unit))
        bar.update()
    bar.set_postfix_str("depth previews and contact sheet")
    write_previews(out, sample.view_names, sample.images, small, K_model, (H, W), unit, folder)
    bar.update()
    stages["render"] = time.perf_counter() - start
    bar.set_postfix_str("extracting the mesh")
    start = time.perf_counter()
    mesh = scene.extract_mesh(mesh_resolution)
    stages["mesh"] = time.perf_counter() - start
    bar.update()
    bar.close()
    # Back to the given cameras' world and units where they are known (poses_known), else the
    # first camera's frame in model units.
    w2c = cams["w2c"].cpu()  # [V, 4, 4]
    units = "normalised (first camera = world)"
    if ann["poses_known"]:
        given = sample.w2c.double()
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64) / scene.units_per_given
        mesh.vertices = transform_points(invert_pose(given[0]), vertices).numpy()
        w2c = given.float()
        units = ann.get("pose_units", "metres")
    for suffix in ("ply", "glb"):  # GLB turned upright by the cameras' up
        write_mesh(out / f"{folder}_mesh.{suffix}", mesh.vertices, mesh.faces, mesh.visual.vertex_colors,
                   up=up_from_cameras(w2c))
    names = ann["files"]  # the photos' own file names, so that the model reads them back
    K_full = torch.stack([source_K(cams["K"][v].cpu().double(), ann["content"][v], ann["source_size"][v])
                          for v in range(sample.num_views)])  # [V, 3, 3] at each photo's full size
    heights = [int(s[0]) for s in ann["source_size"]]
    widths = [int(s[1]) for s in ann["source_size"]]
    write_colmap_text(out, names, K_full, w2c.double(), heights, widths)
    info = {"convention": "OpenCV, w2c world-to-camera, K in pixels of the full-size photo",
            "units": units,
            "views": [{"name": n, "K": K_full[i].tolist(), "w2c": w2c[i].tolist(), "height": heights[i],
                       "width": widths[i]} for i, n in enumerate(names)],
            "mesh": {"vertices": len(mesh.vertices), "faces": len(mesh.faces),
                     "sdf_queries": mesh.metadata.get("sdf_queries")}}
    (out / "cameras.json").write_text(json.dumps(info, indent=1))
    return {**info, "seconds": stages}


def main(argv=None):
    p = OneLineParser("ivgt.demo", description=__doc__)
    add_demo_flags(p, input_flag="--images", input_help="folder of photos (any size, orientation and number)",
                   model=DEFAULT_MODEL, make="make reproduce-ivgt", out="results/ivgt/demo")
    p.add_argument("--mesh-resolution", type=int, default=64,
                   help="marching-cubes cells per side of the mesh's bounding box (>= 8)")
    p.add_argument("--render-views", type=int, default=RENDER_VIEWS, metavar="N",
                   help=f"render each view from its N nearest input views (default {RENDER_VIEWS}; 0: all views, "
                        "whose cost grows as the square of the number of views); the mesh uses all views")
    p.add_argument("--seed", type=int, default=0, help="torch seed (the demo is deterministic on CPU)")
    add_view_flag(p)
    a = p.parse_args(argv)
    with one_line_errors("ivgt.demo"):
        if a.mesh_resolution < 8:
            raise ValueError(f"--mesh-resolution: expected an int >= 8 (marching-cubes cells per side), "
                             f"got {a.mesh_resolution}")
        if a.render_views < 0:
            raise ValueError(f"--render-views: expected an int >= 0 (0: all views), got {a.render_views}")
        if not Path(a.images).is_dir():
            raise FileNotFoundError(f"{a.images}: --images folder not found")
        flags = check_demo_flags(a)
        sample = read_image_folder(a.images, max_side=MAX_SIDE, K=flags["K"], fov=flags["fov"],
                                   cameras=flags["cameras"], progress=True)
        model_dir = check_demo_model(a)
        model = IVGT.load(model_dir).to(flags["device"]).eval().requires_grad_(False)  # normals: grads of points only
        print(sample.annotations["note"])
        info = run_demo(a.images, a.out, model, a.mesh_resolution, a.seed, sample=sample, progress=True,
                        render_views=a.render_views)
    print(f"wrote {a.out}: {len(info['views'])} views, mesh {info['mesh']['vertices']} vertices")
    if a.view:  # the mesh and the cameras in the browser, until Ctrl-C
        view_outputs("ivgt.demo", [Path(a.out) / f"{Path(a.images).name}_mesh.ply"], Path(a.out) / "cameras.json")


if __name__ == "__main__":
    main()
