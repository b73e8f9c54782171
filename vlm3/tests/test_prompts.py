"""Coordinates round trip, templates and the answer parser (pure CPU, no model)."""

import math

import numpy as np
import pytest
import torch

from common.cameras import make_K, map_pixels, unify_focal
from vlm3 import prompts as P


@pytest.mark.parametrize("focal", [40.0, 100.0, 300.0])
@pytest.mark.parametrize("scale", [P.DEPTH_SCALE, P.BOX_SCALE])
def test_pixel_round_trip_through_unified_image_and_text(focal, scale):
    """Every pixel of the original image: unify -> normalise -> text -> parse -> denormalise -> map back.

    The text quantum is W/scale original pixels, so with W, H < scale every pixel centre comes back
    inside its own pixel (error <= half a quantum), whatever the canonical focal length.
    """
    H, W = 48, 64
    K = make_K(52.0, 50.0, 31.0, 25.0).double()
    image = torch.rand(3, H, W, dtype=torch.float64)
    unified, K_u = unify_focal(image, K, focal)
    Hu, Wu = unified.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([cols, rows], -1).reshape(-1, 2).double()  # [N, 2] integer pixels (x, y)
    uv = map_pixels(pix + 0.5, K, K_u.double()).numpy()  # [N, 2] centres on the unified image
    inside = (uv[:, 0] < Wu) & (uv[:, 1] < Hu)  # unify_focal's floor cuts a sliver at the far edges
    assert inside.mean() > 0.9
    uv, pix = uv[inside], pix[inside].numpy()
    n = P.normalize_xy(uv, Wu, Hu, scale)  # [N, 2] ints
    texts = [P.correspondence_prompt(q) if scale == P.BOX_SCALE else P.depth_prompt([q]) for q in n]
    parsed = np.array([P.prompt_points(t)[0] for t in texts])  # [N, 2]
    assert np.array_equal(parsed, n)
    back = P.denormalize_xy(parsed, Wu, Hu, scale)
    orig = map_pixels(torch.from_numpy(back), K_u.double(), K).numpy()  # [N, 2]
    assert np.array_equal(np.floor(orig), pix)
    assert np.all(np.abs(orig - (pix + 0.5)) <= np.array([W, H]) / scale / 2 + 1e-9)


@pytest.mark.parametrize("scale", [P.DEPTH_SCALE, P.BOX_SCALE])
def test_unified_pixels_survive_text_exactly(scale):
    """Every pixel of an image no larger than `scale`: its centre's text form reads back inside it."""
    for W, H in ((37, 23), (999, 5), (1000, 2)):
        if W > scale:
            continue
        xs, ys = np.meshgrid(np.arange(W), np.arange(H))
        pix = np.stack([xs, ys], -1).reshape(-1, 2)
        n = P.normalize_xy(pix + 0.5, W, H, scale)
        assert np.array_equal(np.floor(P.denormalize_xy(n, W, H, scale)), pix)


def test_normalise_rejects_pixel_outside_image():
    with pytest.raises(ValueError, match=r"outside the 64x48 image"):
        P.normalize_xy([[64.0, 3.0]], 64, 48, 2000)
    with pytest.raises(ValueError, match=r"outside"):
        P.normalize_xy([[-0.5, 3.0]], 64, 48, 2000)


def test_normalise_box_and_ranges():
    assert P.normalize_box([0, 0, 64, 48], 64, 48).tolist() == [0, 0, 1000, 1000]
    n = P.normalize_xy([[63.999, 47.999], [0, 0]], 64, 48, 2000)
    assert n.tolist() == [[1999, 1999], [0, 0]]


def test_templates_parse_back():
    assert P.parse_depth(P.depth_answer([2.345], think=True)) == pytest.approx(2.35)
    assert P.parse_depth_list(P.depth_answer([1.0, 22.5, 3.25], think=False), 3) == pytest.approx(
        [1.0, 22.5, 3.25]
    )
    ypr = (12.3, -4.5, 0.7)
    assert P.parse_ypr(P.pose_answer("ypr", ypr=ypr)) == pytest.approx(ypr, abs=0.051)
    assert P.parse_rotation_angle(P.pose_answer("angle", angle=89.74)) == pytest.approx(89.7)
    t = np.array([-0.69, 0.02, 0.72]) / np.linalg.norm([-0.69, 0.02, 0.72])
    text = P.pose_answer("direction", t_unit=t)
    assert text.startswith("The camera moves left, forward, unit vector (-0.69, +0.02, +0.72)")
    assert P.parse_direction(text) == pytest.approx(t, abs=0.01)
    assert P.parse_distance(P.pose_answer("distance", distance=1.984)) == pytest.approx(1.98)
    assert P.parse_xy(P.correspondence_answer([12, 999])) == (12.0, 999.0)
    two = P.correspondence_answer([[12, 999], [0, 5]])
    assert two == "(12, 999), (0, 5)" and P.parse_xy_list(two) == [(12.0, 999.0), (0.0, 5.0)]
    assert P.prompt_points(P.correspondence_prompt([[1, 2], [30, 40]])) == [(1, 2), (30, 40)]
    assert P.parse_yes_no(P.object_answer("closer", True)) is True
    assert P.parse_yes_no(P.object_answer("closer", False)) is False


def test_depth_prompt_is_the_papers():
    text = P.depth_prompt([[1234, 567]])
    assert text.startswith(
        "Given this image, how far is the point at coordinates (1234, 567) from the camera?"
    )
    assert "normalised [0, 2000] format" in text and "<answer> </answer> tags" in text
    assert "depth (z)" in P.depth_prompt([[1, 2]], target="z")


# (answer text, expected depth in metres or None = unparseable -> counted wrong)
DEPTH_ANSWERS = [
    ("<answer> 2.35 </answer>", 2.35),
    (
        "<think> The point is around 3.10 meters away from the camera. </think>\n\n<answer> 3.10 </answer>",
        3.10,
    ),
    ("<answer>4.2m</answer>", 4.2),
    ("<answer> 250 cm </answer>", 2.5),
    ("<answer> 1,234.5 </answer>", 1234.5),
    ("The point is about 7.5 meters away.", 7.5),
    ("<answer> 12 ft </answer>", 12 * 0.3048),
    ("<answer> two </answer>", 2.0),
    ("<answer> 3.2", 3.2),  # unclosed tag at the end of the generation
    ("<think> maybe 9 m </think> <answer> 5.0 </answer>", 5.0),
    ("<answer> -3.2 </answer>", None),  # negative depth
    ("<answer> 0 </answer>", None),
    ("<answer> far away </answer>", None),
    ("", None),
    ("<answer> nan </answer>", None),
    ("3.5e1 meters", 35.0),
    ("<answer> \u22122.0 </answer>", None),  # unicode minus: negative
]


@pytest.mark.parametrize("text,expected", DEPTH_ANSWERS)
def test_parse_depth_table(text, expected):
    got = P.parse_depth(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


POSE_ANSWERS = [
    ("parse_ypr", "Yaw=+89.6°, Pitch=+2.6°, Roll=+6.1°", (89.6, 2.6, 6.1)),
    ("parse_ypr", "yaw: -12 degrees, pitch: 3 deg, roll = 0.5", (-12.0, 3.0, 0.5)),
    ("parse_ypr", "Yaw=0.5 rad, Pitch=0, Roll=0", (math.degrees(0.5), 0.0, 0.0)),
    ("parse_ypr", "Yaw=+89.6°, Pitch=+2.6°", None),  # roll missing
    ("parse_rotation_angle", "Rotation angle: 89.7 degrees", 89.7),
    ("parse_rotation_angle", "<answer> Rotation angle: 1.2 rad </answer>", math.degrees(1.2)),
    ("parse_rotation_angle", "no idea", None),
    ("parse_distance", "Translation distance: 1.98 meters", 1.98),
    ("parse_distance", "Translation distance: 150 cm", 1.5),
    ("parse_distance", "Translation distance: unknown", None),
    ("parse_xy", "(481, 302)", (481.0, 302.0)),
    ("parse_xy", "The matching pixel is at (12,7).", (12.0, 7.0)),
    ("parse_xy", "<think> near (5, 5) </think> <answer> (640, 33) </answer>", (640.0, 33.0)),
    ("parse_xy", "(481 302)", None),
    ("parse_yes_no", "<answer> Yes </answer>", True),
    ("parse_yes_no", "No, it is not.", False),
    ("parse_yes_no", "Yes and no", None),
    ("parse_yes_no", "<answer> maybe </answer>", None),
]


@pytest.mark.parametrize("fn,text,expected", POSE_ANSWERS)
def test_parse_structured_table(fn, text, expected):
    got = getattr(P, fn)(text)
    if expected is None:
        assert got is None
    elif isinstance(expected, tuple):
        assert got == pytest.approx(expected)
    else:
        assert got == pytest.approx(expected) if not isinstance(expected, bool) else got is expected


def test_parse_direction_normalises_and_keeps_zero():
    assert P.parse_direction("moves forward, unit vector (0, 0, 2)") == pytest.approx((0, 0, 1))
    assert P.parse_direction("does not move, unit vector (0.00, 0.00, 0.00)") == (0.0, 0.0, 0.0)
    assert P.parse_direction("moves forward") is None


def test_failures_are_logged(caplog):
    failures = []
    with caplog.at_level("WARNING", logger="vlm3.parse"):
        P.log_failure(failures, "depth", "depth", "<answer> ??? </answer>", 3)
    assert failures[0].index == 3 and "counted as wrong" in caplog.text
