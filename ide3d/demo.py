"""Ask a 3D-IDE model about a video: it answers, grounds the text, and draws the chosen box.

    python -m ide3d.demo --images data/synthetic/test/00000_indoor --ask "the red box"
    python -m ide3d.demo --images scans/scene0011_00 --boxes scannet_val_pred_box.json --ask "the chair"
    python -m ide3d.demo --images my_photos/ --ask "How many chairs are there?"      # answer only

`--images` is a scene folder in the project's format (scene.json: depth, K, w2c; its annotated
objects' boxes are the candidates unless `--boxes` is given), a ScanNet SensReader export (depth,
poses, axis alignment; `--boxes` required to ground), or a folder of photos, read by
`common.datasets.read_image_folder` (EXIF rotation applied, each fitted into the model's square
frame, resized then padded, K changed to match; cameras from --K, --fov, --cameras or the files
beside the photos, said in one line). Photos have no depth: the question is answered, grounding is
skipped and the reason printed. The text is asked as a
question and, where the video has depth and poses, also grounded: proposal pooling needs them, as
in Video-3D LLM and the official 3D-IDE (RGB-only means no 3D inputs to the language model).
Writes `<out>/<name>_answer.json` and `<out>/<name>_grounding.png` (name = the folder's name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.cameras import project, transform_points
from common.cli import OneLineParser, add_demo_flags, check_demo_flags, check_demo_model, one_line_errors
from common.datasets import io, read_image_folder, read_scene
from common.datasets.scannet import read_scannet_axis_alignment, read_scannet_scene, scannet_color_frames
from common.errors import DatasetError
from common.metrics import box_corners
from ide3d.data import Query, Scene, object_boxes, prepare, uniform_frames
from ide3d.grounding import predict_single
from ide3d.processing import ground_prompt, qa_prompt

DEFAULT_MODEL = "results/ide3d/ide3d/final"  # make reproduce-ide3d's model
EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]  # the 12 box edges


def draw_boxes(scene: Scene, boxes: list, colours: list, scale: int = 2, columns: int = 4) -> Image.Image:
    """The scene's frames in a grid, each with the axis-aligned boxes [6] projected (OpenCV cameras)."""
    tiles = []
    for f in range(scene.frames.shape[0]):
        rgb = (scene.frames[f].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        img = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        for box, colour in zip(boxes, colours):
            corners = torch.from_numpy(
                box_corners(np.asarray(box[:3]), np.asarray(box[3:]))
            ).float()  # [8, 3]
            cam = transform_points(scene.w2c[f], corners)  # [8, 3]
            if bool((cam[:, 2] <= 0.05).any()):
                continue  # behind the camera: not drawn
            uv = (project(cam, scene.K[f]) * scale).tolist()  # [8, 2]
            for a, b in EDGES:
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=colour, width=2)
        tiles.append(img)
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (w * min(columns, len(tiles)), h * rows))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    return sheet


def read_boxes(path, scene_id: str) -> torch.Tensor:
    """Candidate boxes [N, 6]: a JSON list of [cx, cy, cz, dx, dy, dz], or Video-3D LLM's box file."""
    from ide3d.scannet import read_box_json

    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        boxes = np.asarray(data, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 6:
            raise DatasetError(path, "expected a list of [cx, cy, cz, dx, dy, dz] boxes")
        return torch.from_numpy(boxes).float()
    table = read_box_json(path)
    if scene_id not in table:
        raise DatasetError(path, f"no boxes for scene {scene_id!r}")
    return torch.from_numpy(table[scene_id]).float()


def read_video(folder: Path, frames: int, boxes_path: str | None, size=None,
               flags: dict | None = None) -> tuple[Scene, str | None]:
    """The video at `folder` as a Scene (boxes may be empty) and why it cannot be grounded (or None).
    A folder of photos is fitted to `size` (H, W) (None: their most common size); `flags` are
    `common.cli.check_demo_flags`'s K, fov and cameras."""
    flags = flags or {"K": None, "fov": None, "cameras": None}
    if (folder / "scene.json").is_file():
        sample = read_scene(folder, load=("depth",))
        ids = uniform_frames(sample.num_views, frames)
        objects = sample.annotations.get("objects", [])
        boxes = (
            read_boxes(boxes_path, sample.scene_id)
            if boxes_path
            else torch.from_numpy(object_boxes(objects)).float()
            if objects
            else torch.zeros(0, 6)
        )
        depth = sample.depth[ids] if sample.depth is not None else None
        scene = Scene(
            folder.name,
            ids,
            sample.images[ids],
            depth if depth is not None else torch.zeros_like(sample.images[ids, 0]),
            sample.K[ids],
            sample.w2c[ids],
            boxes,
            [],
            objects,
        )
        why = None if depth is not None and len(boxes) else "the scene has no depth or no candidate boxes"
        return scene, why
    if (folder / "color").is_dir():
        numbers = list(scannet_color_frames(folder))
        sample = read_scannet_scene(folder, frames=[numbers[i] for i in uniform_frames(len(numbers), frames)])
        align = torch.from_numpy(np.linalg.inv(read_scannet_axis_alignment(folder))).float()
        boxes = read_boxes(boxes_path, folder.name) if boxes_path else torch.zeros(0, 6)
        scene = Scene(
            folder.name,
            [int(v) for v in sample.view_names],
            sample.images,
            sample.depth,
            sample.K,
            sample.w2c @ align,
            boxes,
            [],
        )
        return scene, None if len(boxes) else "--boxes is needed to ground in a ScanNet scan"
    sample = read_image_folder(folder, size=size, K=flags["K"], fov=flags["fov"], cameras=flags["cameras"],
                               progress=True)
    print(sample.annotations["note"])
    ids = uniform_frames(sample.num_views, frames)
    scene = Scene(
        folder.name,
        ids,
        sample.images[ids],
        torch.zeros_like(sample.images[ids, 0]),
        sample.K[ids],
        sample.w2c[ids],
        torch.zeros(0, 6),
        [],
    )
    return scene, "a folder of images has no depth or poses (grounding pools proposals by their 3D points)"


@torch.no_grad()
def ground_and_answer(
    model, processor, scene: Scene, text: str, ground: bool, max_new_tokens: int = 16
) -> dict:
    from ide3d.data import collate

    scene.queries = [Query("qa", qa_prompt(text), text, "demo", "demo", answers=[""])]
    if ground:
        scene.queries.append(Query("ground", ground_prompt(text, False), text, "demo", "demo", []))
    prepare(scene, processor)
    device = next(model.parameters()).device
    batch = collate([scene], [(0, 0)], processor, with_answers=False)
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values_videos")}
    out = {"question": text, "answer": processor.decode(model.answer(inputs, max_new_tokens))[0]}
    if ground:
        batch = collate([scene], [(0, 1)], processor)
        res = model(
            **{
                k: batch[k].to(device)
                for k in ("input_ids", "attention_mask", "position_ids", "pixel_values_videos", "video_index")
            }
        )
        objects = model.object_features(
            res.video.patch_features[0], batch["membership"][0].to(device), batch["boxes"][0].to(device)
        )
        scores = model.ground_scores(res.last_hidden_state[0, int(batch["ground_index"][0])], objects).cpu()
        k = predict_single(scores)
        out["grounding"] = {
            "candidate": k,
            "box": scene.boxes[k].tolist(),
            "score": float(scores[k]),
            "no_target_score": float(scores[-1]),
            "candidates": len(scene.boxes),
        }
    return out


def grounding_picture(model_processor, cfg, path: Path) -> None:
    """A held-out scene's first ScanRefer-style query: chosen box red, ground truth green."""
    from ide3d.data import load_scenes

    model, processor = model_processor
    scene = load_scenes(cfg.data, cfg.data.test_split)[0]
    query = next(q for q in scene.queries if q.dataset == "scanrefer")
    result = ground_and_answer(model, processor, scene, query.text, ground=True)
    image = draw_boxes(scene, [query.target_boxes[0], result["grounding"]["box"]], ["lime", "red"])
    canvas = Image.new("RGB", (image.width, image.height + 24), "white")
    canvas.paste(image, (0, 24))
    ImageDraw.Draw(canvas).text((6, 6), f'"{query.text}"  (green: ground truth, red: 3D-IDE)', fill="black")
    canvas.save(path)


def frame_size(model_dir: Path):
    """(S, S): the square frame of a checkpoint this package saved (ide3d_processor.json), else None
    (a LLaVA-Video folder: the processor resizes whatever it gets)."""
    path = model_dir / "ide3d_processor.json"
    if not path.is_file():
        return None
    size = int(io.read_json(path)["image_size"])
    return size, size


def main(argv=None) -> None:
    from tqdm import tqdm

    ap = OneLineParser("ide3d.demo", description=__doc__)
    add_demo_flags(ap, input_flag="--images", input_help="a scene folder, a ScanNet export or a folder of photos",
                   model=DEFAULT_MODEL, make="make reproduce-ide3d", out="results/ide3d/demo")
    ap.add_argument("--ask", required=True, help="a question, or a description to ground")
    ap.add_argument("--boxes", default=None, help="candidate boxes (JSON list, or Video-3D LLM's box file)")
    ap.add_argument("--num-frames", type=int, default=8, help="frames taken, evenly spaced over the video (>= 2)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed")
    args = ap.parse_args(argv)
    with one_line_errors("ide3d.demo"):
        from ide3d.model import load_pretrained

        if args.num_frames < 2:
            raise ValueError(f"--num-frames: expected >= 2, got {args.num_frames}")
        if not args.ask.strip():
            raise ValueError("--ask: expected a question or a description, got an empty string")
        flags = check_demo_flags(args)
        folder = Path(args.images)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: --images folder not found")
        model_dir = check_demo_model(args)
        torch.manual_seed(args.seed)
        scene, why = read_video(folder, args.num_frames, args.boxes, frame_size(model_dir), flags)
        with tqdm(total=2, desc="ide3d.demo", unit="step", disable=None) as bar:
            bar.set_postfix_str("loading the model")
            model, processor = load_pretrained(model_dir)
            model.to(flags["device"]).eval()
            bar.update()
            if why:
                print(f"ide3d.demo: not grounding: {why}", file=sys.stderr)
            bar.set_postfix_str("answering" + (" and grounding" if why is None else ""))
            result = ground_and_answer(model, processor, scene, args.ask, ground=why is None)
            bar.update()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{folder.name}_answer.json").write_text(json.dumps(result, indent=1))
        if "grounding" in result:
            draw_boxes(scene, [result["grounding"]["box"]], ["red"]).save(
                out / f"{folder.name}_grounding.png"
            )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
