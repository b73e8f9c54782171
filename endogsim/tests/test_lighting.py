"""The endoscope's light on simulated Gaussians (`endogsim.lighting`) and the future-frame
diagnostic's band helper."""

import numpy as np
import pytest
import torch

from endogsim.binding import Camera, bind_isotropic, render_particles
from endogsim.lighting import RestLight, fit_rest_colors, rest_normals, shading
from endogsim.physics import Particles


def _plane(n=9, z=0.1):
    u, v = np.meshgrid(np.linspace(-0.01, 0.01, n), np.linspace(-0.01, 0.01, n))
    return np.stack([u.ravel(), v.ravel(), np.full(u.size, z)], -1)  # [n^2, 3], facing the camera


def test_rest_normals_face_the_camera_and_shading_follows_the_turn():
    plane = _plane()
    n = rest_normals(plane)
    assert np.allclose(n, [0, 0, -1], atol=1e-9)
    centre = plane[40:41]
    assert shading(n[40:41], centre, 0.0)[0, 0] == pytest.approx(100.0)  # cos 1 / r^2 at r = 0.1 m
    turned = np.array([[0.0, np.sin(np.pi / 3), -np.cos(np.pi / 3)]])  # 60 degrees away from the light
    assert shading(turned, centre, 0.0)[0, 0] == pytest.approx(50.0)
    assert shading(turned, centre, 0.2)[0, 0] == pytest.approx(100 * (0.2 + 0.8 * 0.5))
    assert shading(-n[40:41], centre, 0.0)[0, 0] == 0.0  # facing away: unlit


def test_rest_light_keeps_rest_colours_and_darkens_a_turned_or_receding_surface():
    plane = _plane()
    light = RestLight(plane, rest_normals(plane))
    colors = torch.full((len(plane), 3), 0.5)
    eye = np.broadcast_to(np.eye(3), (len(plane), 3, 3))
    assert torch.allclose(light.colors(colors, np.zeros_like(plane), eye), colors)
    # a shear that tilts the surface by 30 degrees about x: F^-T turns the normal by 30 degrees
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    tilted = light.ratio(np.zeros_like(plane), np.broadcast_to(R, (len(plane), 3, 3)))[40, 0]
    assert tilted == pytest.approx(c, rel=1e-6)  # cos 30: the centre point still at the same distance
    pushed = light.ratio(np.tile([0, 0, 0.01], (len(plane), 1)), eye)[40, 0]
    assert pushed == pytest.approx((0.1 / 0.11) ** 2, rel=1e-6)  # 1 cm further: inverse square
    with pytest.raises(ValueError, match="ambient"):
        RestLight(plane, rest_normals(plane), ambient=1.0)


def test_fit_rest_colors_matches_the_rest_frame_where_the_canonical_colours_do_not():
    H, W = 24, 32
    pts = _plane(12, 0.1)
    particles = Particles(x=pts, volume=np.full(len(pts), 1e-9), object_id=np.zeros(len(pts), int))
    rng = np.random.default_rng(0)
    truth = bind_isotropic(particles, rng.uniform(0.1, 0.9, (len(pts), 3)), 0.0012)
    camera = Camera(torch.tensor([[200.0, 0, W / 2], [0, 200.0, H / 2], [0, 0, 1]]), torch.eye(4), W, H)
    rest = torch.tensor(pts, dtype=torch.float32)
    with torch.no_grad():
        image = render_particles(rest, truth, camera)[0]  # [H, W, 3]
    blurred = bind_isotropic(particles, np.full((len(pts), 3), 0.5), 0.0012)  # a compromise colour everywhere
    tool = torch.zeros(H, W, dtype=torch.bool)
    tool[:4] = True  # tool pixels are not fitted
    fitted = fit_rest_colors(blurred, rest, camera, None, image, tool, steps=150)
    with torch.no_grad():
        before = (render_particles(rest, blurred, camera)[0] - image).abs()[~tool].mean()
        after = (render_particles(rest, fitted, camera)[0] - image).abs()[~tool].mean()
    assert after < 0.25 * before, (float(before), float(after))
    assert torch.equal(fitted.offsets, blurred.offsets) and torch.equal(fitted.scales, blurred.scales)
    with pytest.raises(ValueError, match="image"):
        fit_rest_colors(blurred, rest, camera, None, image[:-1], tool)


def test_near_tool_is_the_band_around_the_tool_without_it():
    from endogsim.diagnostics.future_frames import near_tool

    tool = torch.zeros(2, 7, 9, dtype=torch.bool)
    tool[0, 3, 4] = True  # one tool pixel in frame 0, none in frame 1
    near = near_tool(tool, 2)
    assert near.shape == tool.shape and not near[0, 3, 4] and not near[1].any()
    assert int(near[0].sum()) == 5 * 5 - 1 and near[0, 1, 2] and near[0, 5, 6] and not near[0, 0, 4]
