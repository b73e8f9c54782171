"""common.viewer: started headless on a free loopback port, its page fetched over HTTP, then stopped."""

import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="viser is not installed (pip install viser): the 3D viewer cannot start")

from common.viewer import Viewer  # noqa: E402


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def test_viewer_serves_its_page_on_loopback_and_stops(tmp_path):
    from common.cameras import look_at
    from common.pictures import write_mesh

    viewer = Viewer(port=0, title="test")  # 0: a free port chosen by the system
    try:
        assert viewer.url.startswith("http://127.0.0.1:") and viewer.port > 0
        rng = np.random.default_rng(0)
        points = rng.random((200, 3))
        viewer.add_point_cloud("points", points, points)
        viewer.add_mesh("mesh", [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], np.eye(3))
        viewer.add_mesh("grey", [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
        eyes = torch.tensor([[2.0, 0, 0], [0, 2.0, 0]], dtype=torch.float64)
        w2c = look_at(eyes, torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64))
        K = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
        frustums = viewer.add_cameras("cameras", K, w2c, 48, 64, images=torch.rand(2, 3, 48, 64))
        assert len(frustums) == 2
        np.testing.assert_allclose(frustums[1].position, [0, 2, 0], atol=1e-6)  # camera centre
        positions = points[None] + np.linspace(0, 0.1, 4)[:, None, None]  # [4, 200, 3]
        slider, clouds = viewer.add_frames("sim", positions, times=[0, 0.01, 0.02, 0.03],
                                           images=np.zeros((4, 8, 8, 3), np.uint8))
        assert [c.visible for c in clouds] == [True, False, False, False]
        slider.value = 2  # what dragging the slider does
        assert [c.visible for c in clouds] == [False, False, True, False]
        write_mesh(tmp_path / "m.ply", [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], np.eye(3))
        viewer.add_file(tmp_path / "m.ply")

        status, kind, body = _get(viewer.url + "/")
        assert status == 200 and "text/html" in kind
        assert body.lstrip().lower().startswith(b"<!doctype html") and len(body) > 1000
    finally:
        viewer.stop()
    with pytest.raises((urllib.error.URLError, ConnectionError, socket.timeout)):
        _get(viewer.url + "/")


def test_viewer_serves_this_machine_only():
    with pytest.raises(ValueError, match="serves this machine only"):
        Viewer(port=0, host="0.0.0.0")
    with pytest.raises(ValueError, match="port: expected an int"):
        Viewer(port=-1)


def test_view_outputs_shows_a_demos_files_and_cameras_json(tmp_path):
    import argparse
    import json

    from common.pictures import write_point_cloud
    from common.viewer import add_view_flag, view_outputs

    parser = argparse.ArgumentParser()
    add_view_flag(parser)
    assert parser.parse_args(["--view"]).view and not parser.parse_args([]).view
    write_point_cloud(tmp_path / "points.ply", np.random.default_rng(0).random((50, 3)), np.full((50, 3), 0.5))
    views = [{"name": f"{i}.jpg", "K": [[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]], "height": 24 + 8 * i,
              "width": 32 - 8 * i, "w2c": np.eye(4).tolist()} for i in range(2)]  # landscape, portrait
    (tmp_path / "cameras.json").write_text(json.dumps({"views": views}))
    viewer = view_outputs("test", [tmp_path / "points.ply", tmp_path / "absent.ply"], tmp_path / "cameras.json",
                          port=0, serve=False)
    try:
        status, _, body = _get(viewer.url + "/")
        assert status == 200 and b"<!doctype html" in body[:100].lower()
    finally:
        viewer.stop()
