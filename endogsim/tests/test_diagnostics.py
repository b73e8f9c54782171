"""The diagnostics' own helpers (the experiments themselves run on a trained 4DGS)."""

import numpy as np
import pytest
import torch

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


def test_near_tool_is_the_band_around_the_tool_without_it():
    from endogsim.diagnostics.future_frames import near_tool

    tool = torch.zeros(2, 7, 9, dtype=torch.bool)
    tool[0, 3, 4] = True  # one tool pixel in frame 0, none in frame 1
    near = near_tool(tool, 2)
    assert near.shape == tool.shape and not near[0, 3, 4] and not near[1].any()
    assert int(near[0].sum()) == 5 * 5 - 1 and near[0, 1, 2] and near[0, 5, 6] and not near[0, 0, 4]
