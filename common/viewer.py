"""An interactive 3D viewer of results in the browser, through viser, served on this machine only.

    viewer = Viewer(up=(0, -1, 0))                      # http://127.0.0.1:8080 (next free port if taken)
    viewer.add_point_cloud("points", points, colors)    # [N, 3], colours [N, 3] in [0, 1] or uint8
    viewer.add_mesh("mesh", vertices, faces, colors)    # [M, 3], [F, 3], per-vertex colours
    viewer.add_cameras("cameras", K, w2c, H, W, images) # frustums with their images
    viewer.add_frames("simulation", positions, colors, times, images)   # a slider over time
    viewer.add_file("mesh.glb")                         # a PLY/GLB written by common.pictures
    viewer.serve_forever()                              # prints the address; Ctrl-C stops it

The demos' `--view` (`add_view_flag`) calls `view_outputs(prog, files, cameras)` once their files are
written: it shows the PLY files and the cameras (a dict, or a cameras.json such as ivgt.demo writes).

The server listens on the loopback address only (127.0.0.1; "localhost" or "::1" may be asked for,
nothing else): from another machine, forward the port (`ssh -L 8080:127.0.0.1:8080 host`). The page
is viser's bundled client; nothing is fetched from outside.

Conventions: OpenCV cameras, w2c world-to-camera 4x4, K in pixels. `up` is the world's up
direction: (0, -1, 0) for a world that is a camera frame (y down: the demos' reconstructions in
the first camera's frame), (0, 0, 1) for `common.synthetic`'s z-up world.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from common.cameras import matrix_to_quaternion

__all__ = ["Viewer", "LOOPBACK", "VIEW_HELP", "add_view_flag", "view_outputs"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _np(x, dtype=np.float32) -> np.ndarray:
    return (x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)).astype(dtype)


def _rgb_u8(colors, n: int, what: str) -> np.ndarray:
    """colors [n, 3|4] (float in [0, 1] or uint8) or one colour [3] -> uint8 [n, 3]."""
    c = colors.detach().cpu().numpy() if torch.is_tensor(colors) else np.asarray(colors)
    if c.ndim == 1:
        c = np.broadcast_to(c, (n, c.shape[0]))
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
        raise ValueError(f"{what}: colors expected [{n}, 3] or [{n}, 4], got {tuple(c.shape)}")
    if c.dtype != np.uint8:
        c = (np.clip(c.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(c[:, :3])


def _image_u8(image) -> np.ndarray:
    """float [3, H, W] in [0, 1] or [H, W, 3], or uint8 [H, W, 3] -> uint8 [H, W, 3]."""
    a = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def _points(x, what: str) -> np.ndarray:
    p = _np(x)
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
        raise ValueError(f"{what}: expected finite points [N, 3], got shape {tuple(p.shape)}")
    return p


def _point_size(points: np.ndarray) -> float:
    """A point size that shows a cloud as a surface: the median distance to the nearest neighbour
    (over at most 2000 of the points), else the bounding-box diagonal / 300."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return 0.01
    sample = points[:: max(1, len(points) // 2000)]
    spacing = float(np.median(cKDTree(points).query(sample, k=2)[0][:, 1]))
    return spacing if spacing > 0 else max(float(np.linalg.norm(points.max(0) - points.min(0))) / 300.0, 1e-6)


class Viewer:
    """A viser server on the loopback address with helpers for the project's conventions."""

    def __init__(self, port: int = 8080, up=(0.0, -1.0, 0.0), host: str = "127.0.0.1", title: str | None = None):
        if host not in LOOPBACK:
            raise ValueError(f"host: the viewer serves this machine only ({', '.join(LOOPBACK)}), got {host!r}; "
                             f"forward the port to see it from another machine")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port: expected an int in [0, 65535] (0: any free port), got {port!r}")
        import viser

        self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.host = host
        self.server.scene.set_up_direction(tuple(float(v) for v in up))
        self.up = np.asarray(up, dtype=np.float64) / max(float(np.linalg.norm(up)), 1e-12)
        self.sliders = {}
        self._lo, self._hi, self._first_camera = None, None, None

    def _grow(self, points: np.ndarray) -> None:
        """Widen the content's bounds by points [N, 3] and aim the initial view of new pages at it:
        from behind, above and beside the first camera when there is one, else from the -z side."""
        if len(points) == 0:
            return
        lo, hi = points.min(0), points.max(0)
        self._lo = lo if self._lo is None else np.minimum(self._lo, lo)
        self._hi = hi if self._hi is None else np.maximum(self._hi, hi)
        centre, size = (self._lo + self._hi) / 2, max(float(np.linalg.norm(self._hi - self._lo)), 1e-3)
        if self._first_camera is not None:  # (centre, forward) of the first camera
            forward = self._first_camera[1]
            side = np.cross(forward, self.up)
            position = self._first_camera[0] + size * (0.4 * self.up + 0.4 * side - 0.3 * forward)
        else:
            position = centre + size * (np.array([0.0, 0.0, -1.0]) + 0.4 * self.up)
        camera = self.server.initial_camera
        camera.look_at, camera.position, camera.up = tuple(centre), tuple(position), tuple(self.up)
        camera.near, camera.far = 1e-3 * size, 1e3 * size

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -------------------------------------------------------------------------------- content
    def add_point_cloud(self, name: str, points, colors=(0.6, 0.6, 0.6), point_size: float | None = None):
        p = _points(points, name)
        c = _rgb_u8(colors, len(p), name)
        self._grow(p)
        return self.server.scene.add_point_cloud(f"/{name}", p, c, point_size=point_size or _point_size(p),
                                                 point_shape="rounded")

    def add_mesh(self, name: str, vertices, faces, colors=None):
        """A triangle mesh; per-vertex colours when given, else one grey."""
        import trimesh

        v = _points(vertices, name)
        f = _np(faces, np.int64)
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
            raise ValueError(f"{name}: faces expected [F, 3] indices in [0, {len(v)}), got shape {tuple(f.shape)}")
        self._grow(v)
        if colors is None:
            return self.server.scene.add_mesh_simple(f"/{name}", v, f, color=(180, 180, 180), side="double")
        mesh = trimesh.Trimesh(v, f, vertex_colors=_rgb_u8(colors, len(v), name), process=False)
        return self.server.scene.add_mesh_trimesh(f"/{name}", mesh)

    def add_cameras(self, name: str, K, w2c, height, width, images=None, scale: float | None = None,
                    color=(220, 60, 30)):
        """One frustum per camera (K [V, 3, 3] or [3, 3], w2c [V, 4, 4] or [4, 4], image height and width
        each an int or one per camera), showing its image if given ([V, 3, H, W] float or [V, H, W, 3]
        uint8). scale: the frustum's depth (default: a tenth of the spread of the camera centres, or 0.1)."""
        K = _np(K, np.float64).reshape(-1, 3, 3)
        w2c = _np(w2c, np.float64).reshape(-1, 4, 4)
        if len(K) == 1 and len(w2c) > 1:
            K = np.repeat(K, len(w2c), 0)
        if len(K) != len(w2c):
            raise ValueError(f"{name}: {len(K)} intrinsics for {len(w2c)} poses")
        heights = np.broadcast_to(np.asarray(height, dtype=np.float64), (len(K),))
        widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(K),))
        c2w = np.linalg.inv(w2c)  # [V, 4, 4]
        centres = c2w[:, :3, 3]
        if self._first_camera is None and len(centres):
            self._first_camera = (centres[0], c2w[0, :3, 2])  # its centre and viewing direction (+z)
        self._grow(centres)
        if scale is None:
            spread = float(np.linalg.norm(centres.max(0) - centres.min(0))) if len(centres) > 1 else 0.0
            scale = spread / 10 if spread > 0 else 0.1
        quats = matrix_to_quaternion(torch.from_numpy(c2w[:, :3, :3])).numpy()  # [V, 4] (w, x, y, z)
        handles = []
        for v in range(len(w2c)):
            fov_y = 2 * math.atan(heights[v] / 2 / K[v, 1, 1])  # viser's frustums are OpenCV cameras too
            image = None if images is None else _image_u8(images[v])
            handles.append(self.server.scene.add_camera_frustum(
                f"/{name}/{v:03d}", fov=fov_y, aspect=widths[v] / heights[v], scale=scale, color=color, image=image,
                wxyz=tuple(quats[v]), position=tuple(centres[v]), thickness=scale / 40))
        return handles

    def add_frames(self, name: str, positions, colors=(0.8, 0.4, 0.4), times=None, images=None):
        """A sequence of point sets (positions [F, P, 3], colours [P, 3] or [F, P, 3]) with a time slider
        that shows one frame at a time, and the frame's image (images [F, ...]) beside it if given."""
        x = _np(positions)
        if x.ndim != 3 or x.shape[-1] != 3 or len(x) == 0 or not np.isfinite(x).all():
            raise ValueError(f"{name}: positions expected finite [F, P, 3], got shape {tuple(x.shape)}")
        F, P = x.shape[:2]
        self._grow(x.reshape(-1, 3))
        c = _np(colors, np.float64) if not (isinstance(colors, np.ndarray) and colors.dtype == np.uint8) else colors
        per_frame = np.ndim(c) == 3
        size = _point_size(x[0])
        clouds = [self.server.scene.add_point_cloud(
            f"/{name}/{f:04d}", x[f], _rgb_u8(c[f] if per_frame else c, P, name), point_size=size,
            point_shape="rounded", visible=f == 0) for f in range(F)]
        labels = [f"{t:.4g} s" for t in _np(times, np.float64)] if times is not None else [str(f) for f in range(F)]
        slider = self.server.gui.add_slider(f"{name}: frame", min=0, max=max(F - 1, 1), step=1, initial_value=0,
                                            disabled=F == 1)
        time_text = self.server.gui.add_markdown(f"time {labels[0]}")
        picture = self.server.gui.add_image(_image_u8(images[0]), label=name) if images is not None else None

        @slider.on_update
        def _(_event) -> None:
            f = int(slider.value)
            for i, cloud in enumerate(clouds):
                cloud.visible = i == f
            time_text.content = f"time {labels[f]}"
            if picture is not None:
                picture.image = _image_u8(images[f])

        self.sliders[name] = slider
        return slider, clouds

    def add_file(self, path, name: str | None = None):
        """Show a PLY/GLB/OBJ mesh or point cloud file (trimesh reads it; colours kept)."""
        import trimesh

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found")
        try:
            geom = trimesh.load(str(path))
        except Exception as exc:  # trimesh raises many kinds for a file it cannot parse
            raise ValueError(f"{path}: not a mesh or point cloud trimesh can read ({type(exc).__name__}: {exc})") from None
        name = name or path.stem
        if getattr(geom, "bounds", None) is not None:  # None for an empty file
            self._grow(np.asarray(geom.bounds, np.float64))
        if isinstance(geom, trimesh.Scene):
            return self.server.scene.add_glb(f"/{name}", geom.export(file_type="glb"))
        if isinstance(geom, trimesh.PointCloud):
            colors = geom.colors if len(getattr(geom, "colors", [])) else (0.6, 0.6, 0.6)
            return self.add_point_cloud(name, geom.vertices, colors)
        return self.server.scene.add_mesh_trimesh(f"/{name}", geom)

    # ------------------------------------------------------------------------------ lifetime
    def serve_forever(self, prog: str = "viewer") -> None:
        """Print the address and serve until Ctrl-C, then stop."""
        print(f"{prog}: viewer at {self.url} (this machine only; from another one: "
              f"ssh -L {self.port}:127.0.0.1:{self.port} <host>); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self.server.stop()


# ------------------------------------------------------------------------------------- the demos

VIEW_HELP = ("after writing the outputs, show them in the browser (point clouds, meshes, cameras) at "
             "http://127.0.0.1:8080, this machine only; Ctrl-C stops it")


def add_view_flag(parser) -> None:
    """The demos' `--view` flag."""
    parser.add_argument("--view", action="store_true", help=VIEW_HELP)


def view_outputs(prog: str, files=(), cameras=None, up=None, port: int = 8080, serve: bool = True) -> Viewer:
    """Show a demo's PLY/GLB files (those that exist) and its cameras: a dict of `Viewer.add_cameras`'
    arguments or the path of a cameras.json ({"views": [{"K", "w2c", "height", "width"}, ...]}).
    up: the world's up (default: from the cameras, else (0, -1, 0)). Serves until Ctrl-C unless
    serve=False (then the caller stops the returned viewer)."""
    from common.pictures import up_from_cameras

    if cameras is not None and not isinstance(cameras, dict):
        views = json.loads(Path(cameras).read_text(encoding="utf-8"))["views"]
        cameras = {k: [v[k] for v in views] for k in ("K", "w2c", "height", "width")}
    if up is None:
        up = up_from_cameras(np.asarray(_np(cameras["w2c"], np.float64))) if cameras else (0.0, -1.0, 0.0)
    viewer = Viewer(port=port, up=up, title=prog)
    try:
        for path in files:
            if Path(path).is_file():
                viewer.add_file(path)
        if cameras:
            viewer.add_cameras("cameras", **cameras)
    except BaseException:
        viewer.stop()
        raise
    if serve:
        viewer.serve_forever(prog)
    return viewer
