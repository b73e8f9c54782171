"""VLM3's text interface: pixel references, prompt and answer templates, and the answer parser.

Pure Python/NumPy (and `common.cameras` for the pixel mapping), testable on CPU without a model.

Coordinates (VLM3 Sec. 3, "text-based pixel reference"): a point is written in the prompt as
integers normalised to the *focal-unified* image, [0, 2000) for depth and [0, 1000) for boxes and
correspondences, relative to the image width and height. A continuous coordinate x (OpenCV, pixel
centres at u + 0.5) on an image of width W becomes n = floor(x / W * scale) and reads back as the
centre of its bin, x' = (n + 0.5) * W / scale. While W <= scale every pixel holds at least one
bin, so an integer pixel's centre always reads back inside the same pixel (tested).

Answer templates follow the official notebook and sample data (notes/anchors-vlm.md Sec. 1.3):
depth "<answer> 2.35 </answer>" (optionally after DepthLM's "<think> ... </think>"), pose
"Rotation angle: 89.7 degrees", "Yaw=+89.6°, Pitch=+2.6°, Roll=+6.1°", "The camera moves left,
forward, unit vector (-0.69, +0.02, +0.72).", "Translation distance: 1.98 meters", and
correspondences "(x, y)". The question wordings of the pose and object tasks are not published;
ours are stated here and in the README.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from common.metrics import parse_number

log = logging.getLogger("vlm3.parse")

DEPTH_SCALE = 2000  # depth prompts: [0, 2000) (VLM3 notebook)
BOX_SCALE = 1000  # boxes and correspondences: [0, 1000)


# ----------------------------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------------------------


def normalize_xy(xy, width: int, height: int, scale: int) -> np.ndarray:
    """Continuous (x, y) [..., 2] on a W x H image -> integer text coordinates [..., 2] in [0, scale).

    Raises ValueError for a point outside [0, W) x [0, H) (a pixel outside the image).
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.shape[-1] != 2:
        raise ValueError(f"xy: expected shape [..., 2], got {xy.shape}")
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
    if not np.all(inside):
        bad = xy[~inside].reshape(-1, 2)[0]
        raise ValueError(
            f"pixel ({bad[0]:g}, {bad[1]:g}) is outside the {width}x{height} image "
            f"(expected 0 <= x < {width}, 0 <= y < {height})"
        )
    size = np.array([width, height], dtype=np.float64)
    return np.floor(xy / size * scale).astype(np.int64)  # [..., 2]


def denormalize_xy(nxy, width: int, height: int, scale: int) -> np.ndarray:
    """Text coordinates [..., 2] -> continuous (x, y) [..., 2] at the centre of their bin."""
    nxy = np.asarray(nxy, dtype=np.float64)
    size = np.array([width, height], dtype=np.float64)
    return (nxy + 0.5) * size / scale


def normalize_box(box, width: int, height: int) -> np.ndarray:
    """Box [x0, y0, x1, y1] in continuous pixel edges -> integers in [0, 1000] (x1, y1 may be 1000)."""
    box = np.asarray(box, dtype=np.float64)
    size = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(np.round(box / size * BOX_SCALE), 0, BOX_SCALE).astype(np.int64)


def fmt_xy(nxy) -> str:
    return f"({int(nxy[0])}, {int(nxy[1])})"


def fmt_box(nbox) -> str:
    return "(" + ", ".join(str(int(v)) for v in nbox) + ")"


# ----------------------------------------------------------------------------------------------
# Prompts and answers
# ----------------------------------------------------------------------------------------------

_ANSWER_INSTRUCTION = (
    "Output the thinking process in <think> </think> and final answer (the meter "
    "number only, without the unit) in <answer> </answer> tags."
)


def depth_prompt(points, target: str = "distance") -> str:
    """VLM3's depth question for one or several points (text coordinates in [0, 2000)).

    `target` "distance" (ray length, what "how far ... from the camera" asks and what VLM3 and
    DepthLM label) or "z" (z-depth, DepthVLM's label) changes only the wording of the question.
    """
    points = [tuple(int(v) for v in p) for p in points]
    what = "how far is the point" if target == "distance" else "what is the depth (z) of the point"
    if len(points) == 1:
        return (
            f"Given this image, {what} at coordinates {fmt_xy(points[0])} from the camera? The "
            f"coordinates are in normalised [0, 2000] format relative to image width and height. "
            + _ANSWER_INSTRUCTION
        )
    what = "how far are the points" if target == "distance" else "what are the depths (z) of the points"
    listed = ", ".join(fmt_xy(p) for p in points)
    return (
        f"Given this image, {what} at coordinates {listed} from the camera? The coordinates are "
        f"in normalised [0, 2000] format relative to image width and height. Output the thinking "
        f"process in <think> </think> and final answer (the meter numbers only, in the same order, "
        f"separated by commas, without the unit) in <answer> </answer> tags."
    )


def marker_depth_prompt() -> str:
    """DepthLM's prompt for a point marked by a red arrow drawn into the image (the ablation)."""
    return (
        "Given this image, how far is the point pointed by the red arrow from the camera? "
        + _ANSWER_INSTRUCTION
    )


def depth_answer(values, think: bool) -> str:
    """DepthLM/VLM3's answer: "<answer> 2.35 </answer>", after a templated <think> when asked."""
    values = [float(v) for v in values]
    nums = ", ".join(f"{v:.2f}" for v in values)
    if not think:
        return f"<answer> {nums} </answer>"
    if len(values) == 1:
        thought = f"The point is around {values[0]:.2f} meters away from the camera."
    else:
        thought = f"The points are around {nums} meters away from the camera."
    return f"<think> {thought} </think>\n\n<answer> {nums} </answer>"


def correspondence_prompt(points) -> str:
    """VLM3's pixel-correspondence question (coordinates in [0, 1000) on both images) for one pixel
    `(x, y)` or several `[[x, y], ...]` (answered in order, "(x, y), (x, y)")."""
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if len(points) == 1:
        return (
            f"Given these two images, what pixel in the second image corresponds to pixel "
            f"{fmt_xy(points[0])} in the first image? The coordinates are in normalised [0, 1000] format "
            f"relative to image width and height. Report the answer as (x, y)."
        )
    listed = ", ".join(fmt_xy(p) for p in points)
    return (
        f"Given these two images, what pixels in the second image correspond to pixels {listed} in the "
        f"first image? The coordinates are in normalised [0, 1000] format relative to image width and "
        f"height. Report the answers as (x, y), in the same order, separated by commas."
    )


def correspondence_answer(points) -> str:
    return ", ".join(fmt_xy(p) for p in np.asarray(points).reshape(-1, 2))


POSE_QUESTIONS = ("angle", "ypr", "direction", "distance")


def pose_prompt(kind: str) -> str:
    """Relative pose of the second camera with respect to the first (four question types)."""
    if kind == "angle":
        q = 'What is the rotation angle between the two cameras? Answer as "Rotation angle: X degrees".'
    elif kind == "ypr":
        q = (
            "What is the rotation of the second camera relative to the first, as yaw, pitch and roll "
            "(intrinsic, about the first camera's axes; yaw > 0 turns right, pitch > 0 looks up, "
            'roll > 0 banks right)? Answer as "Yaw=+Y°, Pitch=+P°, Roll=+R°".'
        )
    elif kind == "direction":
        q = (
            "In which direction does the camera move from the first image to the second, in the first "
            "camera's frame (x right, y down, z forward)? Answer with the directions and the unit vector."
        )
    elif kind == "distance":
        q = 'How far does the camera move between the two images? Answer as "Translation distance: X meters".'
    else:
        raise ValueError(f"pose question kind: expected one of {POSE_QUESTIONS}, got {kind!r}")
    return "Given these two images taken by the same camera, " + q[0].lower() + q[1:]


def _signed(v: float) -> str:
    return f"{v:+.1f}"


def direction_words(t_unit, threshold: float = 0.3) -> list[str]:
    """The named directions of a unit translation (OpenCV axes: x right, y down, z forward)."""
    x, y, z = (float(v) for v in t_unit)
    words = []
    if abs(x) >= threshold:
        words.append("right" if x > 0 else "left")
    if abs(y) >= threshold:
        words.append("down" if y > 0 else "up")
    if abs(z) >= threshold:
        words.append("forward" if z > 0 else "backward")
    return words or ["barely"]


def pose_answer(kind: str, *, angle=None, ypr=None, t_unit=None, distance=None) -> str:
    if kind == "angle":
        return f"Rotation angle: {angle:.1f} degrees"
    if kind == "ypr":
        return f"Yaw={_signed(ypr[0])}°, Pitch={_signed(ypr[1])}°, Roll={_signed(ypr[2])}°"
    if kind == "direction":
        vec = ", ".join(f"{v:+.2f}" for v in t_unit)
        return f"The camera moves {', '.join(direction_words(t_unit))}, unit vector ({vec})."
    if kind == "distance":
        return f"Translation distance: {distance:.2f} meters"
    raise ValueError(f"pose answer kind: expected one of {POSE_QUESTIONS}, got {kind!r}")


OBJECT_QUESTIONS = ("closer", "left", "taller", "distance", "height")
OBJECT_METRIC = ("distance", "height")  # answered in metres, correct within +-25% (SpatialRGPT)


def object_prompt(kind: str, box_a, box_b=None) -> str:
    """Object-level 3D questions over text boxes [x0, y0, x1, y1] in [0, 1000] (VLM3's SpatialRGPT form)."""
    a = f"bounding box region {fmt_box(box_a)}"
    b = f"bounding box region {fmt_box(box_b)}" if box_b is not None else None
    if kind == "closer":
        q = f"Is {a} closer to the camera than {b}? Answer yes or no in <answer> </answer> tags."
    elif kind == "left":
        q = f"Is {a} to the left of {b}? Answer yes or no in <answer> </answer> tags."
    elif kind == "taller":
        q = f"Is {a} taller than {b}? Answer yes or no in <answer> </answer> tags."
    elif kind == "distance":
        q = f"How far is {a} from {b} (centre to centre)? Answer in meters in <answer> </answer> tags."
    elif kind == "height":
        q = f"How tall is {a}? Answer in meters in <answer> </answer> tags."
    else:
        raise ValueError(f"object question kind: expected one of {OBJECT_QUESTIONS}, got {kind!r}")
    return "Given this image, " + q[0].lower() + q[1:]


def object_answer(kind: str, value) -> str:
    if kind in OBJECT_METRIC:
        return f"<answer> {float(value):.2f} </answer>"
    return f"<answer> {'yes' if value else 'no'} </answer>"


# ----------------------------------------------------------------------------------------------
# Parsing: tags, units, signs, extra text. None = unparseable (counted wrong by the caller).
# ----------------------------------------------------------------------------------------------

_NUM = r"[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_LENGTH_UNITS = {
    "mm": 1e-3,
    "millimeter": 1e-3,
    "millimetre": 1e-3,
    "cm": 1e-2,
    "centimeter": 1e-2,
    "centimetre": 1e-2,
    "m": 1.0,
    "meter": 1.0,
    "metre": 1.0,
    "km": 1e3,
    "kilometer": 1e3,
    "kilometre": 1e3,
    "ft": 0.3048,
    "foot": 0.3048,
    "feet": 0.3048,
    "in": 0.0254,
    "inch": 0.0254,
    "inches": 0.0254,
}
_NUM_UNIT = re.compile(
    rf"(?<![\w.])({_NUM})\s*(millimet(?:er|re)s?|centimet(?:er|re)s?|kilomet(?:er|re)s?|met(?:er|re)s?"
    rf"|mm|cm|km|m|ft|feet|foot|inch(?:es)?|in)?(?![a-z])",
    re.IGNORECASE,
)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)


def answer_span(text: str) -> str:
    """The last <answer>...</answer> content (an unclosed one counts), else the text without <think>."""
    if not isinstance(text, str):
        raise ValueError(f"answer: expected a string, got {type(text).__name__}")
    tagged = _ANSWER.findall(text)
    return (tagged[-1] if tagged else _THINK.sub(" ", text)).replace("\u2212", "-")


def _unit_scale(unit: str | None) -> float:
    if not unit:
        return 1.0
    u = unit.lower()
    for key in sorted(_LENGTH_UNITS, key=len, reverse=True):
        if u.startswith(key) and (len(u) == len(key) or u[len(key) :] in ("s", "es")):
            return _LENGTH_UNITS[key]
    return 1.0


def parse_lengths(text: str) -> list[float]:
    """Every length in the answer span, converted to metres ("250 cm" -> 2.5; no unit = metres)."""
    return [
        float(m.group(1).replace("\u2212", "-")) * _unit_scale(m.group(2))
        for m in _NUM_UNIT.finditer(answer_span(text))
    ]


def parse_depth(text: str) -> float | None:
    """A metric depth in metres; None if absent, zero, negative or non-finite.

    `common.metrics.parse_number` finds the number (tags, thousands separators, number words); a
    length unit written right after that number is converted here ("250 cm" -> 2.5).
    """
    value = parse_number(text)
    if value is None:
        return None
    m = _NUM_UNIT.search(answer_span(text).replace(",", ""))
    if m and math.isclose(float(m.group(1)), value):
        value *= _unit_scale(m.group(2))
    return value if (math.isfinite(value) and value > 0) else None


def parse_depth_list(text: str, n: int) -> list[float | None]:
    """n depths from a multi-point answer "2.35, 4.10, 7.80"; missing or bad entries are None."""
    values = parse_lengths(text)
    out = [v if (math.isfinite(v) and v > 0) else None for v in values[:n]]
    return out + [None] * (n - len(out))


_PAIR = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")


def parse_xy(text: str) -> tuple[float, float] | None:
    """The first "(x, y)" in the answer (the last <answer> span when tagged), or "x, y" bare."""
    span = answer_span(text)
    m = _PAIR.search(span) or re.search(rf"({_NUM})\s*,\s*({_NUM})", span)
    return (float(m.group(1)), float(m.group(2))) if m else None


def parse_xy_list(text: str) -> list[tuple[float, float]]:
    """Every "(x, y)" in the answer span, in order (several-pixel correspondence answers)."""
    return [(float(a), float(b)) for a, b in _PAIR.findall(answer_span(text))]


def prompt_points(prompt: str) -> list[tuple[int, int]]:
    """The text coordinates "(x, y)" written in a prompt, in order (the inverse of the templates)."""
    return [(int(float(a)), int(float(b))) for a, b in _PAIR.findall(prompt)]


_ANGLE = re.compile(rf"({_NUM})\s*(°|degrees?|deg|radians?|rad)?", re.IGNORECASE)


def _angle_deg(value: str, unit: str | None) -> float:
    v = float(value.replace("\u2212", "-"))
    return math.degrees(v) if unit and unit.lower().startswith("rad") else v


def parse_rotation_angle(text: str) -> float | None:
    span = answer_span(text)
    m = re.search(r"rotation angle\s*[:=]?\s*", span, re.IGNORECASE)
    m = _ANGLE.search(span, m.end() if m else 0)
    return _angle_deg(m.group(1), m.group(2)) if m else None


def parse_ypr(text: str) -> tuple[float, float, float] | None:
    span = answer_span(text)
    out = []
    for name in ("yaw", "pitch", "roll"):
        m = re.search(rf"{name}\s*[:=]?\s*({_NUM})\s*(°|degrees?|deg|radians?|rad)?", span, re.IGNORECASE)
        if not m:
            return None
        out.append(_angle_deg(m.group(1), m.group(2)))
    return tuple(out)


_TRIPLE = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\)")


def parse_direction(text: str) -> tuple[float, float, float] | None:
    """The unit vector "(x, y, z)" (normalised); None without one. The zero vector ("does not
    move") is returned as is and scores 90 degrees."""
    m = _TRIPLE.search(answer_span(text))
    if not m:
        return None
    v = np.array([float(g.replace("\u2212", "-")) for g in m.groups()])
    n = np.linalg.norm(v)
    return tuple(float(c) for c in (v / n if n > 1e-9 else v))


def parse_distance(text: str) -> float | None:
    span = answer_span(text)
    m = re.search(r"distance\s*[:=]?\s*", span, re.IGNORECASE)
    m2 = _NUM_UNIT.search(span, m.end() if m else 0)
    if not m2:
        return None
    v = float(m2.group(1).replace("\u2212", "-")) * _unit_scale(m2.group(2))
    return v if v >= 0 else None


_YES = re.compile(r"\b(yes|true|correct|indeed)\b", re.IGNORECASE)
_NO = re.compile(r"\b(no|not|false|incorrect)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool | None:
    """Answer polarity (VLM3's demo scoring): True, False, or None when both or neither appear."""
    span = answer_span(text)
    yes, no = bool(_YES.search(span)), bool(_NO.search(span))
    if yes == no:
        return None
    return yes


@dataclass
class ParseFailure:
    """One unparseable answer: it counts as wrong and is written to the evaluation log."""

    task: str
    kind: str
    text: str
    index: int


def log_failure(failures: list, task: str, kind: str, text: str, index: int) -> None:
    failures.append(ParseFailure(task, kind, text, index))
    log.warning("unparseable %s/%s answer #%d counted as wrong: %r", task, kind, index, text[:200])
