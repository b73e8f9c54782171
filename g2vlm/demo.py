"""Reconstruct a scene, build its scene graph and answer a question with G2VLM.

    python -m g2vlm.demo --images data/synthetic/test/00000_indoor --ask "How many boxes are there?"
    python -m g2vlm.demo --images photos/ --ask "..."                          # RGB only
    python -m g2vlm.demo --images photos/ --depth depth/ --K 500,500,320,240 --mesh partial.ply --ask "..."

`--images` is a folder of photos or a scene folder of the project's format (scene.json: its depth is
the sensor depth, its annotated objects the candidate boxes). Photos are read by
`common.datasets.read_image_folder`: EXIF rotation applied, each fitted into the model's square
input (resized, then padded) with K changed to match; intrinsics from --K or --fov, else from camera
files beside or above them (COLMAP sparse/0, cameras.json, LLFF poses_bounds.npy, intrinsics.txt,
or --cameras), which also give poses; one line says what was found and assumed. With `--depth`
(16-bit PNGs in millimetres named as the images, at the photos' full size) the sensor-depth mode
runs and needs intrinsics and, for several views, poses (a camera file); without it the RGB-only
path predicts depth and cameras. `--mesh` adds a partial mesh or point cloud (PLY/OBJ,
world frame) to the geometry. `--boxes` (a JSON list of [cx, cy, cz, dx, dy, dz]) gives the
candidate objects of the scene graph. Writes `<out>/<name>_points.ply`, `<name>_mesh.ply` and
`<name>_mesh.glb` (vertex colours; PLY in the world frame, GLB turned y-up for Blender),
`<name>_scene_graph.json` (with candidates) and `<name>_answer.json` (name = the folder's name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.cameras import resample_to_intrinsics, resize
from common.cli import OneLineParser, add_demo_flags, check_demo_flags, check_demo_model, one_line_errors
from common.viewer import add_view_flag, view_outputs
from common.datasets import DatasetError, io, read_image_folder, read_scene
from g2vlm.data import object_boxes, uniform_views

DEPTH_SCALE = 1000.0  # --depth PNGs hold millimetres
DEFAULT_MODEL = "results/g2vlm/g2vlm/stage2/final"  # make reproduce-g2vlm's model


def read_mesh(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices [M, 3] and vertex normals [M, 3] of a PLY/OBJ mesh or point cloud (trimesh)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "--mesh file not found")
    try:
        geom = trimesh.load(str(path), force=None)
    except Exception as exc:  # trimesh raises many kinds for a file it cannot parse
        raise DatasetError(
            path, f"not a mesh or point cloud trimesh can read ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(geom, trimesh.Scene):
        geom = geom.dump(concatenate=True) if geom.geometry else None
    vertices = getattr(geom, "vertices", None)
    if vertices is None or len(vertices) == 0:
        raise DatasetError(path, "no vertices (expected a PLY/OBJ mesh or point cloud)")
    normals = (
        np.asarray(geom.vertex_normals) if isinstance(geom, trimesh.Trimesh) else np.zeros_like(vertices)
    )
    return torch.as_tensor(np.asarray(vertices), dtype=torch.float32), torch.as_tensor(
        normals, dtype=torch.float32
    )


def read_inputs(args, size: int, flags: dict) -> dict:
    """Views at `size` x `size` and what is known of them (module docstring); raises on bad input
    before any model is loaded. `flags` is `common.cli.check_demo_flags(args)`."""
    folder = Path(args.images)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: --images folder not found")
    boxes, note = None, None
    if (folder / "scene.json").is_file():
        sample = read_scene(folder, load=("depth",))
        depth, known_K, poses = sample.depth, True, True
        objects = sample.annotations.get("objects", [])
        boxes = torch.from_numpy(object_boxes(objects)).float() if objects else None
        rgb, K = resize(sample.images, sample.K, (size, size))  # [V, 3, S, S]
        sensor = resize(depth[:, None], sample.K, (size, size), mode="nearest")[0][:, 0] if depth is not None else None
    else:
        sample = read_image_folder(folder, size=(size, size), K=flags["K"], fov=flags["fov"],
                                   cameras=flags["cameras"], progress=True)
        ann = sample.annotations
        rgb, K, note = sample.images, sample.K, ann["note"]
        known_K = not ann["intrinsics_source"].startswith("assumed")
        poses = bool(ann["poses_known"])
        sensor = None
        if args.depth is not None:
            dd = Path(args.depth)
            maps = []
            for v, name in enumerate(sample.view_names):
                path = dd / f"{name}.png"
                if not path.is_file():
                    raise DatasetError(
                        path, f"no depth map for image {name!r} (expected {name}.png in --depth)"
                    )
                full = io.read_depth_png(path, DEPTH_SCALE, tuple(ann["source_size"][v]))  # [h, w] metres
                # the photo's fitting applied to its depth map (nearest: no blending across edges)
                maps.append(resample_to_intrinsics(full[None], ann["source_K"][v], K[v], (size, size),
                                                   mode="nearest")[0])
            sensor = torch.stack(maps)  # [V, S, S]
    views = uniform_views(sample.num_views, args.num_views)
    out = {"name": folder.name, "rgb": rgb[views].clamp(0, 1), "K": K[views], "w2c": sample.w2c[views],
           "boxes": boxes, "note": note}
    if sensor is not None:
        if not known_K:
            raise ValueError(
                "intrinsics missing: the sensor-depth mode needs --K fx,fy,cx,cy or --fov, or a camera file "
                "with the images (COLMAP sparse/0, cameras.json, poses_bounds.npy, intrinsics.txt)"
            )
        if len(views) > 1 and not poses:
            raise ValueError(
                "poses missing: several views in the sensor-depth mode need a camera file with poses "
                "(COLMAP, cameras.json, poses_bounds.npy or --cameras), or drop --depth for the RGB-only path"
            )
        out["sensor"] = sensor[views]
    if args.boxes:
        data = io.read_json(args.boxes)  # DatasetError naming the file: missing, not JSON
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.zeros((0,))
        if arr.ndim != 2 or arr.shape[1] != 6 or not np.isfinite(arr).all():
            raise DatasetError(args.boxes, "expected a JSON list of finite [cx, cy, cz, dx, dy, dz] boxes")
        out["boxes"] = torch.from_numpy(arr).float()
    if args.mesh:
        out["vertices"], out["vertex_normals"] = read_mesh(args.mesh)
    return out


@torch.no_grad()
def run(model, inputs: dict, question: str, out_dir: Path, tsdf_voxel: float = 0.05) -> dict:
    from g2vlm.evaluate import scene_graph
    from g2vlm.objective import QA_SUFFIX
    from common.pictures import up_from_cameras, write_mesh, write_point_cloud
    from g2vlm.tsdf import colored_points, tsdf_mesh

    g = model.geometry
    rgb, K, w2c = inputs["rgb"], inputs["K"], inputs["w2c"]
    mode = "sensor" if "sensor" in inputs else "rgb"
    if mode == "sensor":
        depth, _ = g.depth_head(rgb, inputs["sensor"])
    else:
        depth, w2c, _, _ = g.rgb_only(rgb, w2c[0])
    tokens = g.tokens(
        rgb, inputs.get("sensor", depth), K, w2c, mode, inputs.get("vertices"), inputs.get("vertex_normals")
    )
    name = inputs["name"]
    points, colors = colored_points(depth, K, w2c, rgb)
    up = up_from_cameras(w2c)  # GLB files are turned so that this is up (glTF's +y)
    write_point_cloud(out_dir / f"{name}_points.ply", points, colors, up=up)
    mesh = tsdf_mesh(depth.cpu(), K.cpu(), w2c.cpu(), rgb.cpu(), tsdf_voxel)
    if mesh is not None:
        for suffix in ("ply", "glb"):
            write_mesh(out_dir / f"{name}_mesh.{suffix}", mesh.vertices, mesh.faces, mesh.visual.vertex_colors,
                       up=up)
    result = {"mode": mode, "question": question}
    if inputs.get("boxes") is not None:
        feats, objectness = g.object_features(tokens, inputs["boxes"], rgb, K, w2c)
        graph = scene_graph(model, inputs["boxes"], w2c[0], feats, objectness)
        (out_dir / f"{name}_scene_graph.json").write_text(json.dumps(graph, indent=1))
        result["scene_graph"] = f"{len(graph['objects'])} objects, {len(graph['relations'])} relations"
    else:
        print("g2vlm.demo: no scene graph: give candidate boxes with --boxes", file=sys.stderr)
    result["answer"] = model.answer([question + QA_SUFFIX], [tokens])[0]
    (out_dir / f"{name}_answer.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> None:
    from tqdm import tqdm

    ap = OneLineParser("g2vlm.demo", description=__doc__)
    add_demo_flags(ap, input_flag="--images", input_help="a folder of photos, or a scene folder (scene.json)",
                   model=DEFAULT_MODEL, make="make reproduce-g2vlm", out="results/g2vlm/demo")
    ap.add_argument("--ask", required=True, help="the question about the scene")
    ap.add_argument(
        "--depth", default=None, help="sensor depth PNGs (16-bit millimetres), named as the images"
    )
    ap.add_argument("--mesh", default=None, help="a partial mesh or point cloud (PLY/OBJ, world frame)")
    ap.add_argument("--boxes", default=None, help="candidate boxes for the scene graph (JSON list)")
    ap.add_argument("--num-views", type=int, default=4, help="views taken, evenly spaced over the images")
    add_view_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors("g2vlm.demo"):
        from g2vlm.model import G2VLM

        if args.num_views < 1:
            raise ValueError(f"--num-views: expected >= 1, got {args.num_views}")
        if not args.ask.strip():
            raise ValueError("--ask: expected a question, got an empty string")
        flags = check_demo_flags(args)
        model_dir = check_demo_model(args)
        geometry_config = model_dir / "geometry" / "config.json"
        if not geometry_config.is_file():
            raise FileNotFoundError(f"{args.model}: not a G2VLM folder (expected geometry/config.json)")
        inputs = read_inputs(args, int(json.loads(geometry_config.read_text())["image_size"]), flags)
        if inputs["note"]:
            print(inputs["note"])
        with tqdm(total=2, desc="g2vlm.demo", unit="step", disable=None) as bar:
            bar.set_postfix_str("loading the model")
            model = G2VLM.from_pretrained(model_dir)
            model.to(flags["device"]).eval()
            bar.update()
            inputs = {k: v.to(flags["device"]) if torch.is_tensor(v) else v for k, v in inputs.items()}
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            bar.set_postfix_str("reconstructing and answering")
            result = run(model, inputs, args.ask, out)
            bar.update()
    print(json.dumps(result, indent=1))
    if args.view:  # the point cloud and the mesh in the browser (world frame), until Ctrl-C
        from common.pictures import up_from_cameras

        view_outputs("g2vlm.demo", [out / f"{inputs['name']}_{s}.ply" for s in ("points", "mesh")],
                     up=up_from_cameras(inputs["w2c"].cpu()))


if __name__ == "__main__":
    main()
