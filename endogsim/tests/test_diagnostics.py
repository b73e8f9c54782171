"""The diagnostics' own helpers (the experiments themselves run on a trained 4DGS)."""

import numpy as np
import pytest

from endogsim.diagnostics.future_frames import lambert, rest_normals


def test_rest_normals_face_the_camera_and_lambert_follows_the_turn():
    u, v = np.meshgrid(np.linspace(-0.01, 0.01, 9), np.linspace(-0.01, 0.01, 9))
    plane = np.stack([u.ravel(), v.ravel(), np.full(u.size, 0.1)], -1)  # z = 0.1 m, facing the camera
    n = rest_normals(plane)
    assert np.allclose(n, [0, 0, -1], atol=1e-9)
    centre = plane[40:41]
    assert lambert(n[40:41], centre)[0, 0] == pytest.approx(100.0)  # cos 1 / r^2 at r = 0.1 m
    turned = np.array([[0.0, np.sin(np.pi / 3), -np.cos(np.pi / 3)]])  # 60 degrees away from the light
    assert lambert(turned, centre)[0, 0] == pytest.approx(50.0)
    assert lambert(-n[40:41], centre)[0, 0] == 0.0  # facing away: unlit
