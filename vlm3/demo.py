"""Ask a trained VLM3 about an image: depth at pixels, correspondences, relative pose, objects.

    python -m vlm3.demo --image IMG --ask "depth at 120,64"
    python -m vlm3.demo --image IMG --ask "depth at 120,64 30,100 90,20"       # one prompt, one generation
    python -m vlm3.demo --image IMG --ask "depth at 120,64 30,100" --per-pixel  # one prompt per pixel
    python -m vlm3.demo --image A --image2 B --ask "match 40,50"
    python -m vlm3.demo --image A --image2 B --ask "pose"
    python -m vlm3.demo --image IMG --ask "closer 10,20,40,60 vs 70,10,120,50"  # or left / taller / distance
    python -m vlm3.demo --image IMG --ask "height 10,20,40,60"

Pixels and boxes are in the given image's pixels (x = column, y = row; boxes x0,y0,x1,y1). The
intrinsics come from --intrinsics "fx,fy,cx,cy", an `intrinsics.txt` beside the image, or --fov
(horizontal degrees); without any of them the demo stops, since focal-length unification needs
them. The image is resampled to the checkpoint's canonical focal length, the pixels are written
as normalised text coordinates, and the answer is printed parsed and raw.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from common.cameras import map_pixels, unify_focal
from common.cli import OneLineParser, one_line_errors, parse_K
from common.datasets.io import read_intrinsics_txt, read_rgb
from vlm3 import prompts as P
from vlm3.model import VLM3

SETTINGS_FILE = "vlm3_settings.json"  # canonical focal lengths etc. saved beside the weights


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
                "intrinsics: missing; pass --intrinsics fx,fy,cx,cy, an intrinsics.txt beside the "
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


def load_intrinsics(
    image_path: Path, intrinsics: str | None, fov: float | None, width: int, height: int,
    flag: str = "--intrinsics",
):
    if intrinsics:
        return parse_K(flag, intrinsics).double()
    txt = image_path.parent / "intrinsics.txt"
    if txt.is_file():
        return read_intrinsics_txt(txt).double()
    if fov is not None:
        if not 0 < fov < 180:
            raise ValueError(f"--fov {fov}: expected a horizontal field of view in (0, 180) degrees")
        f = width / 2 / math.tan(math.radians(fov) / 2)
        return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]], dtype=torch.float64)
    return None


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


def run(args) -> dict:
    word, nums = parse_ask(args.ask, bool(args.image2))
    image_path = Path(args.image)
    image = read_rgb(image_path)  # [3, H, W]; DatasetError naming the file if it does not decode
    K = load_intrinsics(image_path, args.intrinsics, args.fov, image.shape[-1], image.shape[-2])
    image2 = K2 = None
    if args.image2:
        image2 = read_rgb(Path(args.image2))
        K2 = load_intrinsics(
            Path(args.image2),
            args.intrinsics2 or args.intrinsics,
            args.fov,
            image2.shape[-1],
            image2.shape[-2],
            "--intrinsics2" if args.intrinsics2 else "--intrinsics",
        )
    predictor = Predictor.load(args.checkpoint)
    if word == "depth":
        pixels = np.array(nums).reshape(-1, 2)
        values, raws = predictor.depth(image, K, pixels, one_prompt=not args.per_pixel)
        return {"task": "depth", "pixels": pixels.tolist(), "metres": values, "raw": raws}
    if word == "pose":
        return {
            "task": "pose",
            **{k: {"parsed": v, "raw": r} for k, (v, r) in predictor.pose(image, K, image2, K2).items()},
        }
    if word == "match":
        xy, raw = predictor.correspondence(image, K, image2, K2, nums)
        return {"task": "correspondence", "pixel": nums, "match": xy, "raw": raw}
    need = 4 if word == "height" else 8
    value, raw = predictor.object(image, K, word, nums[:4], nums[4:] if need == 8 else None)
    return {"task": "object", "kind": word, "answer": value, "raw": raw}


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--image2", default=None)
    ap.add_argument("--ask", required=True)
    ap.add_argument(
        "--checkpoint", default="results/vlm3/vlm3/checkpoint", help="default: make reproduce-vlm3's model"
    )
    ap.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy in pixels of --image")
    ap.add_argument("--intrinsics2", default=None, help="fx,fy,cx,cy of --image2 (default: --intrinsics)")
    ap.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees")
    ap.add_argument("--per-pixel", action="store_true", help="one prompt per pixel instead of one for all")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)  # decoding is greedy; the seed is for completeness
    with one_line_errors("vlm3.demo"):  # bad input (DatasetError is a ValueError): one line, no traceback
        out = run(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
