"""Ask a trained VLM3 about an image: depth at pixels, correspondences, relative pose, objects.

    python -m vlm3.demo --image IMG --ask "depth at 120,64"
    python -m vlm3.demo --image IMG --ask "depth at 120,64 30,100 90,20"       # one prompt, one generation
    python -m vlm3.demo --image IMG --ask "depth at 120,64 30,100" --per-pixel  # one prompt per pixel
    python -m vlm3.demo --image A --image2 B --ask "match 40,50"
    python -m vlm3.demo --image A --image2 B --ask "pose"
    python -m vlm3.demo --image IMG --ask "closer 10,20,40,60 vs 70,10,120,50"  # or left / taller / distance
    python -m vlm3.demo --image IMG --ask "height 10,20,40,60" --K 500,500,320,240

Pixels and boxes are in the given image's pixels as displayed (EXIF rotation applied; x = column,
y = row; boxes x0,y0,x1,y1). The images are read by `common.datasets.read_image_folder`: the
intrinsics come from --K (--K2 for --image2, default --K) or --fov, else from camera files beside
the image (intrinsics.txt, a COLMAP model, cameras.json, --cameras), else a 60-degree horizontal
field of view is assumed and said so in one line. The image is resampled to the checkpoint's
canonical focal length, the pixels are written as normalised text coordinates, and the answer is
printed parsed and raw (JSON), and written to <out>/<image>_answer.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cameras import map_pixels, unify_focal
from common.cli import (OneLineParser, add_demo_flags, check_demo_flags, check_demo_model, one_line_errors,
                        parse_K)
from common.datasets import read_image_folder
from vlm3 import prompts as P
from vlm3.model import VLM3

SETTINGS_FILE = "vlm3_settings.json"  # canonical focal lengths etc. saved beside the weights
DEFAULT_MODEL = "results/vlm3/vlm3/checkpoint"  # make reproduce-vlm3's model
MAX_SIDE = 1536  # images are loaded at most this large (focal-length unification resamples them anyway)


class Predictor:
    """A trained VLM3 plus the data settings it was trained with (focal lengths, depth target)."""

    def __init__(self, vlm: VLM3, settings: dict, max_new_tokens: int = 64):
        self.vlm, self.settings, self.max_new_tokens = vlm, settings, max_new_tokens

    @classmethod
    def load(cls, checkpoint) -> "Predictor":
        checkpoint = Path(checkpoint)
        path = checkpoint / SETTINGS_FILE
        if not path.is_file():
            raise ValueError(f"{path}: not found; expected a checkpoint folder written by vlm3.train")
        return cls(VLM3.from_pretrained(checkpoint), json.loads(path.read_text()))

    def _input(self, image: torch.Tensor, K: torch.Tensor, focal: float):
        """(model-input image [3, H', W'], its K) after focal-length unification (if trained with it)."""
        if K is None:
            raise ValueError(
                "intrinsics: missing; pass --K fx,fy,cx,cy, an intrinsics.txt beside the "
                "image, or --fov DEG (focal-length unification needs them)"
            )
        if not self.settings.get("unify_focal", True):
            return image, K.double()
        out, K_new = unify_focal(image, K.float(), focal)
        return out.clamp(0, 1), K_new.double()

    @staticmethod
    def _to_input(image, K, K_in, xy, edges: bool = False) -> np.ndarray:
        """Pixels (x, y) [N, 2] of `image` -> continuous coordinates on the model input [N, 2].

        Integer pixels go through their centres (+0.5); box corners (edges=True) are used as given.
        A pixel outside the image is a ValueError naming it.
        """
        H, W = image.shape[-2:]
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        hi_x, hi_y = (W, H) if edges else (W - 1, H - 1)
        for x, y in xy:
            if not (0 <= x <= hi_x and 0 <= y <= hi_y):
                raise ValueError(
                    f"pixel ({x:g}, {y:g}) is outside the {W}x{H} image "
                    f"(expected 0 <= x <= {hi_x}, 0 <= y <= {hi_y})"
                )
        centres = xy if edges else np.floor(xy) + 0.5
        return map_pixels(torch.from_numpy(centres), K.double(), K_in).numpy()  # [N, 2]

    def ask(self, images, prompt: str) -> str:
        return self.vlm.generate([images], [prompt], self.max_new_tokens)[0]

    def depth(self, image, K, pixels, one_prompt: bool = True) -> tuple[list, list[str]]:
        """Depths (metres; None where unparseable) at integer pixels [(x, y), ...] and the raw answers.

        one_prompt=True asks about all pixels in one prompt answered in one generation; False asks
        one prompt per pixel (batched).
        """
        img, K_in = self._input(image, K, self.settings["focal_depth"])
        H, W = img.shape[-2:]
        uv = self._to_input(image, K, K_in, pixels)
        uv = np.clip(uv, 0, [W - 1e-6, H - 1e-6])  # a pixel at the very edge may round out by 1e-9
        nxy = P.normalize_xy(uv, W, H, P.DEPTH_SCALE)
        target = self.settings.get("depth_target", "distance")
        if one_prompt:
            raw = self.ask([img], P.depth_prompt(nxy, target))
            return P.parse_depth_list(raw, len(nxy)), [raw]
        raws = self.vlm.generate(
            [[img]] * len(nxy), [P.depth_prompt([q], target) for q in nxy], self.max_new_tokens
        )
        return [P.parse_depth(r) for r in raws], raws

    def correspondence(self, image1, K1, image2, K2, pixel):
        f = self.settings["focal_depth"]
        img1, K1_in = self._input(image1, K1, f)
        img2, K2_in = self._input(image2, K2, f)
        H1, W1 = img1.shape[-2:]
        uv = self._to_input(image1, K1, K1_in, pixel)
        raw = self.ask([img1, img2], P.correspondence_prompt(P.normalize_xy(uv, W1, H1, P.BOX_SCALE)[0]))
        nxy = P.parse_xy(raw)
        if nxy is None:
            return None, raw
        H2, W2 = img2.shape[-2:]
        xy_in = P.denormalize_xy(np.array(nxy), W2, H2, P.BOX_SCALE)[None]  # [1, 2] on the model input
        xy = (
            map_pixels(torch.from_numpy(xy_in), K2_in, K2.double()).numpy()[0] - 0.5
        )  # back to image 2 pixels
        return (float(xy[0]), float(xy[1])), raw

    def pose(self, image1, K1, image2, K2) -> dict:
        f = self.settings["focal_pose"]
        imgs = [self._input(image1, K1, f)[0], self._input(image2, K2, f)[0]]
        raws = self.vlm.generate(
            [imgs] * 4, [P.pose_prompt(k) for k in P.POSE_QUESTIONS], self.max_new_tokens
        )
        parse = {
            "angle": P.parse_rotation_angle,
            "ypr": P.parse_ypr,
            "direction": P.parse_direction,
            "distance": P.parse_distance,
        }
        return {k: (parse[k](r), r) for k, r in zip(P.POSE_QUESTIONS, raws)}

    def object(self, image, K, kind: str, box_a, box_b=None):
        img, K_in = self._input(image, K, self.settings["focal_depth"])
        H, W = img.shape[-2:]
        boxes = []
        for box in (box_a, box_b):
            if box is None:
                boxes.append(None)
                continue
            corners = self._to_input(
                image, K, K_in, np.asarray(box, dtype=np.float64).reshape(2, 2), edges=True
            )
            boxes.append(P.normalize_box(corners.reshape(-1), W, H))
        raw = self.ask([img], P.object_prompt(kind, boxes[0], boxes[1]))
        value = P.parse_depth(raw) if kind in P.OBJECT_METRIC else P.parse_yes_no(raw)
        return value, raw


def read_photo(path, K, fov, cameras, flag: str) -> dict:
    """One image through the common loader: dict(image [3, H, W], K [3, 3] float64 of the loaded
    image, source_K [3, 3] and source_size (h, w) of the full-size image as displayed, note)."""
    sample = read_image_folder([Path(path)], max_side=MAX_SIDE, K=K, fov=fov, cameras=cameras)
    ann = sample.annotations
    return {"image": sample.images[0], "K": sample.K[0].double(), "source_K": ann["source_K"][0].double(),
            "source_size": tuple(ann["source_size"][0]), "note": ann["note"], "flag": flag}


def to_loaded(photo: dict, xy, edges: bool = False) -> np.ndarray:
    """Pixels (x, y) [N, 2] of the full-size image -> the same points on the loaded image (continuous
    coordinates of the pixel, so that `Predictor` takes the pixel that holds it). A pixel outside the
    image is a ValueError naming it."""
    h, w = photo["source_size"]
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    hi_x, hi_y = (w, h) if edges else (w - 1, h - 1)
    for x, y in xy:
        if not (0 <= x <= hi_x and 0 <= y <= hi_y):
            raise ValueError(f"pixel ({x:g}, {y:g}) is outside the {w}x{h} image "
                             f"(expected 0 <= x <= {hi_x}, 0 <= y <= {hi_y})")
    centres = xy if edges else np.floor(xy) + 0.5
    uv = map_pixels(torch.from_numpy(centres), photo["source_K"], photo["K"]).numpy()  # [N, 2]
    H, W = photo["image"].shape[-2:]
    return np.clip(uv, 0, [W, H]) if edges else np.clip(uv - 0.5, 0, [W - 1, H - 1])  # rounding at the edge


def to_source(photo: dict, xy) -> tuple[float, float]:
    """A continuous pixel (x, y) of the loaded image -> the full-size image's."""
    uv = map_pixels(torch.tensor([[xy[0] + 0.5, xy[1] + 0.5]], dtype=torch.float64), photo["K"], photo["source_K"])
    return float(uv[0, 0]) - 0.5, float(uv[0, 1]) - 0.5


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]


def parse_ask(ask: str, has_image2: bool) -> tuple[str, list[float]]:
    """(question word, its numbers) of --ask, checked before any model is loaded."""
    ask = ask.strip()
    word = ask.split()[0].lower() if ask else ""
    nums = _numbers(ask)
    if word == "depth":
        if not nums or len(nums) % 2:
            raise ValueError(f"--ask {ask!r}: expected 'depth at X,Y [X,Y ...]'")
        return word, nums
    if word in ("match", "pose"):
        if not has_image2:
            raise ValueError(f"--ask {word!r} needs --image2")
        if word == "match" and len(nums) != 2:
            raise ValueError(f"--ask {ask!r}: expected 'match X,Y'")
        return word, nums
    if word in P.OBJECT_QUESTIONS:
        need = 4 if word == "height" else 8
        if len(nums) != need:
            raise ValueError(
                f"--ask {ask!r}: expected '{word} x0,y0,x1,y1{'' if need == 4 else ' vs x0,y0,x1,y1'}'"
            )
        return word, nums
    raise ValueError(
        f"--ask {ask!r}: expected 'depth at X,Y', 'match X,Y', 'pose', or one of "
        f"{', '.join(P.OBJECT_QUESTIONS)} with boxes"
    )


def run(args, flags: dict | None = None) -> dict:
    """The answer to args.ask as a dict; `flags` is `check_demo_flags(args)` (read here if None)."""
    flags = flags if flags is not None else check_demo_flags(args)
    word, nums = parse_ask(args.ask, bool(args.image2))
    K2 = parse_K("--K2", args.K2) if args.K2 else flags["K"]
    a = read_photo(args.image, flags["K"], flags["fov"], flags["cameras"], "--image")
    b = read_photo(args.image2, K2, flags["fov"], flags["cameras"], "--image2") if args.image2 else None
    if word == "depth":
        pixels = np.array(nums).reshape(-1, 2)
        loaded = to_loaded(a, pixels)
    elif word == "match":
        loaded = to_loaded(a, nums)
    elif word != "pose":
        boxes = [to_loaded(a, np.reshape(nums[i:i + 4], (2, 2)), edges=True).reshape(-1) for i in range(0, len(nums), 4)]
    predictor = Predictor.load(check_demo_model(args))
    predictor.vlm.model.to(flags["device"]).eval()
    for photo in (a, b):
        if photo is not None:
            print(photo["note"])
    if word == "depth":
        values, raws = predictor.depth(a["image"], a["K"], loaded, one_prompt=not args.per_pixel)
        return {"task": "depth", "pixels": pixels.tolist(), "metres": values, "raw": raws}
    if word == "pose":
        pose = predictor.pose(a["image"], a["K"], b["image"], b["K"])
        return {"task": "pose", **{k: {"parsed": v, "raw": r} for k, (v, r) in pose.items()}}
    if word == "match":
        xy, raw = predictor.correspondence(a["image"], a["K"], b["image"], b["K"], loaded[0])
        return {"task": "correspondence", "pixel": nums, "match": None if xy is None else to_source(b, xy),
                "raw": raw}
    value, raw = predictor.object(a["image"], a["K"], word, *boxes)
    return {"task": "object", "kind": word, "answer": value, "raw": raw}


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.demo", description=__doc__)
    add_demo_flags(ap, input_flag="--image", input_help="the image asked about (any size; EXIF rotation applied)",
                   model=DEFAULT_MODEL, make="make reproduce-vlm3", out="results/vlm3/demo")
    ap.add_argument("--image2", default=None, help="the second image of 'match' and 'pose'")
    ap.add_argument("--K2", default=None, metavar="FX,FY,CX,CY", help="intrinsics of --image2 (default: --K)")
    ap.add_argument("--ask", required=True,
                    help="'depth at X,Y [X,Y ...]', 'match X,Y', 'pose', or closer / left / taller / distance "
                         "X0,Y0,X1,Y1 vs X0,Y0,X1,Y1, height X0,Y0,X1,Y1")
    ap.add_argument("--per-pixel", action="store_true", help="one prompt per pixel instead of one for all")
    ap.add_argument("--seed", type=int, default=0, help="torch seed (decoding is greedy; kept for completeness)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    with one_line_errors("vlm3.demo"):  # bad input (DatasetError is a ValueError): one line, no traceback
        flags = check_demo_flags(args)
        with tqdm(total=1, desc="vlm3.demo", unit="question", disable=None) as bar:
            out = run(args, flags)
            bar.update()
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{Path(args.image).stem}_answer.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
