"""Exact ray casting of a `Scene` in PyTorch.

Every pixel casts one ray through its centre (u + 0.5, v + 0.5). Hits are the analytic
intersections of the ray with every primitive (ray-OBB slab test for boxes, ray-sphere,
ray-capped-cylinder, ray-capped-cone) and with the room (from inside) or the ground slab,
batched over all rays and all primitives; the nearest hit wins. Nothing is sampled or
rasterised, so depth, normals and instance ids are exact at the pixel centres.

Colours are procedural textures evaluated at the 3D hit point (so they agree between views),
shaded by a directional light: rgb = albedo * (ambient + diffuse * max(0, n . l)), no shadows.
Texture detail finer than about two pixels is faded out (by the pixel footprint at the hit) so
that distant floors do not alias.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common import cameras
from common.synthetic.scene import CATEGORIES, Scene

DTYPE = torch.float64  # geometry in double: exact enough that depth is limited by float32 output
EPS = 1e-6  # smallest ray parameter (m) counted as a hit
INF = math.inf

# Surface classes of the background.
FLOOR, CEILING, WALL, GROUND, SKY, OBJECT = range(6)


class _SceneTensors:
    """The primitives of a scene stacked per category, in one column order for all hits."""

    def __init__(self, scene: Scene, device):
        t = lambda x: torch.as_tensor(np.asarray(x), dtype=DTYPE, device=device)  # noqa: E731
        self.scene = scene
        self.columns = []  # object index in scene.objects, per column
        self.groups = {}  # category -> (first column, params)
        for category in CATEGORIES:
            objs = [i for i, o in enumerate(scene.objects) if o.category == category]
            if not objs:
                continue
            prims = [scene.objects[i] for i in objs]
            params = {
                "center": t([o.center for o in prims]),  # [P, 3]
                "half": t([o.size / 2 for o in prims]),  # [P, 3]
                "R": t([o.R for o in prims]),  # [P, 3, 3] object-to-world
            }
            self.groups[category] = (len(self.columns), params)
            self.columns += objs
        self.ids = torch.tensor([scene.objects[i].id for i in self.columns], dtype=torch.long, device=device)
        self.colors = t([scene.objects[i].color for i in self.columns]).reshape(-1, 3)  # [P_all, 3]
        self.bounds_center = t(scene.bounds_center)  # [3]
        self.bounds_half = t(scene.bounds_size / 2)  # [3]
        self.light = t(scene.light_direction)  # [3]


# ---------------------------------------------------------------------------------------------
# Ray-primitive intersections: o, d [n, 3] (d unit) -> t [n, P] (inf where missed), part [n, P]
# ---------------------------------------------------------------------------------------------


def _safe(d: torch.Tensor) -> torch.Tensor:
    """Direction components with exact zeros moved to 1e-12, so slab divisions never give 0/0."""
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def _hit_boxes(o, d, p):
    """Ray-OBB slab test from outside; part = the axis (0, 1, 2) of the entered face."""
    ol = torch.einsum("npi,pij->npj", o[:, None, :] - p["center"][None], p["R"])  # [n, P, 3], R^T (o - c)
    dl = _safe(torch.einsum("ni,pij->npj", d, p["R"]))  # [n, P, 3], R^T d
    t1 = (-p["half"][None] - ol) / dl  # [n, P, 3]
    t2 = (p["half"][None] - ol) / dl  # [n, P, 3]
    t_near, axis = torch.minimum(t1, t2).max(-1)  # [n, P]
    t_far = torch.maximum(t1, t2).min(-1).values  # [n, P]
    hit = (t_near <= t_far) & (t_near > EPS)
    return torch.where(hit, t_near, INF), axis


def _hit_spheres(o, d, p):
    r = p["half"][:, 0]  # [P]
    oc = o[:, None, :] - p["center"][None]  # [n, P, 3]
    b = (oc * d[:, None, :]).sum(-1)  # [n, P]
    perp = oc - b[..., None] * d[:, None, :]  # [n, P, 3], closest approach; stabler than b^2 - c
    disc = r[None] ** 2 - (perp * perp).sum(-1)  # [n, P]
    t = -b - disc.clamp(min=0).sqrt()  # [n, P]
    hit = (disc >= 0) & (t > EPS)
    return torch.where(hit, t, INF), torch.zeros_like(t, dtype=torch.long)


def _first(candidates):
    """Nearest valid candidate: [(t [n, P], ok [n, P])] -> t [n, P] (inf if none), index [n, P]."""
    ts = torch.stack([torch.where(ok, t, INF) for t, ok in candidates], dim=-1)  # [n, P, C]
    return ts.min(-1)


def _hit_cylinders(o, d, p):
    """Upright capped cylinders; part 0 = side, 1 = top cap, 2 = bottom cap."""
    r, hh = p["half"][:, 0], p["half"][:, 2]  # [P]
    ox, oy, oz = (o[:, None, :] - p["center"][None]).unbind(-1)  # [n, P] each
    dx, dy, dz = _safe(d)[:, None, :].unbind(-1)  # [n, 1] each
    a = dx * dx + dy * dy  # [n, 1]
    b = ox * dx + oy * dy  # [n, P]
    cross = ox * dy - oy * dx  # [n, P]
    disc = a * r**2 - cross * cross  # [n, P], = b^2 - a (|o_xy|^2 - r^2)
    t_side = (-b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-300)  # [n, P]
    ok_side = (disc >= 0) & (a > 1e-18) & ((oz + t_side * dz).abs() <= hh) & (t_side > EPS)
    candidates = [(t_side, ok_side)]
    for sign in (1.0, -1.0):
        t_cap = (sign * hh - oz) / dz  # [n, P]
        x, y = ox + t_cap * dx, oy + t_cap * dy
        candidates.append((t_cap, (x * x + y * y <= r**2) & (t_cap > EPS)))
    return _first(candidates)


def _hit_cones(o, d, p):
    """Upright capped cones, base radius r at z = -h/2 and apex at z = +h/2 (local).

    Side: x^2 + y^2 = k^2 (h/2 - z)^2 with k = r / h and -h/2 <= z <= h/2 (the other nappe lies
    above the apex and is rejected by the z test). Part 0 = side, 1 = base.
    """
    r, hh = p["half"][:, 0], p["half"][:, 2]  # [P]
    k2 = (r / (2 * hh)) ** 2  # [P]
    ox, oy, oz = (o[:, None, :] - p["center"][None]).unbind(-1)  # [n, P] each
    dx, dy, dz = _safe(d)[:, None, :].unbind(-1)  # [n, 1] each
    w0 = hh - oz  # [n, P]
    a = dx * dx + dy * dy - k2 * dz * dz  # [n, P]
    b = ox * dx + oy * dy + k2 * w0 * dz  # [n, P]  (half the linear coefficient)
    c = ox * ox + oy * oy - k2 * w0 * w0  # [n, P]
    disc = b * b - a * c  # [n, P]
    sq = disc.clamp(min=0).sqrt()
    q = -(b + torch.where(b >= 0, sq, -sq))  # [n, P]; roots q / a and c / q without cancellation
    candidates = []
    for t in (q / a, c / q):
        z = oz + t * dz
        candidates.append((t, (disc >= 0) & torch.isfinite(t) & (z >= -hh) & (z <= hh) & (t > EPS)))
    t_base = (-hh - oz) / dz  # [n, P]
    x, y = ox + t_base * dx, oy + t_base * dy
    candidates.append((t_base, (x * x + y * y <= r**2) & (t_base > EPS)))
    t, part = _first(candidates)
    return t, (part == 2).long()  # both side roots are part 0


_HIT = {"box": _hit_boxes, "sphere": _hit_spheres, "cylinder": _hit_cylinders, "cone": _hit_cones}


def _object_normals(category, p, index, part, points, d):
    """World normals [m, 3] at hit points [m, 3] of the primitives `index` [m] of one category."""
    center = p["center"][index]  # [m, 3]
    local = points - center  # [m, 3], translation only (round primitives are upright)
    if category == "box":
        R = p["R"][index]  # [m, 3, 3]
        axis_world = R.gather(2, part[:, None, None].expand(-1, 3, 1))[..., 0]  # [m, 3], column `part` of R
        return -torch.sign((axis_world * d).sum(-1, keepdim=True)) * axis_world  # facing the ray
    if category == "sphere":
        return local / p["half"][index, :1]
    r, hh = p["half"][index, 0:1], p["half"][index, 2:3]  # [m, 1]
    rho = local[:, :2].norm(dim=-1, keepdim=True).clamp(min=1e-12)  # [m, 1]
    if category == "cylinder":
        side = torch.cat([local[:, :2] / rho, torch.zeros_like(rho)], dim=-1)  # [m, 3]
        cap_z = torch.where(part == 1, 1.0, -1.0).to(DTYPE)[:, None]  # [m, 1]
        cap = torch.cat([torch.zeros_like(local[:, :2]), cap_z], dim=-1)
        return torch.where((part == 0)[:, None], side, cap)
    k = r / (2 * hh)  # [m, 1] cone: outward normal (cos phi, sin phi, k) / sqrt(1 + k^2)
    side = torch.cat([local[:, :2] / rho, k], dim=-1)  # [m, 3]; at the apex (rho = 0) this is +z
    side = torch.nn.functional.normalize(side, dim=-1)
    base = torch.zeros_like(local)
    base[:, 2] = -1
    return torch.where((part == 0)[:, None], side, base)


def _hit_environment(o, d, st: _SceneTensors, indoor: bool):
    """Room from inside (exit point) or ground slab from outside: t [n], normal [n, 3], class [n]."""
    dl = _safe(d)
    t1 = (st.bounds_center - st.bounds_half - o) / dl  # [n, 3]
    t2 = (st.bounds_center + st.bounds_half - o) / dl  # [n, 3]
    if indoor:
        t, axis = torch.maximum(t1, t2).min(-1)  # [n]
        hit = t > EPS
    else:
        t, axis = torch.minimum(t1, t2).max(-1)  # [n]
        hit = (t <= torch.maximum(t1, t2).min(-1).values) & (t > EPS)
    t = torch.where(hit, t, INF)
    normal = torch.zeros_like(o)
    normal.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))  # facing the ray
    if indoor:
        up = d[:, 2] > 0
        cls = torch.where(axis == 2, torch.where(up, CEILING, FLOOR), WALL)
    else:
        cls = torch.where(hit, GROUND, SKY)
    return t, normal, cls, axis


# ---------------------------------------------------------------------------------------------
# Procedural textures: functions of the world point, so all views agree
# ---------------------------------------------------------------------------------------------


def _mix(h: torch.Tensor) -> torch.Tensor:
    """Integer hash of int64 keys -> float64 in [0, 1]; exact integer arithmetic, portable bit for bit."""
    h = h & 0x7FFFFFFF
    h = ((h ^ (h >> 15)) * 1103515245) & 0x7FFFFFFF  # products stay below 2^62
    h = ((h ^ (h >> 13)) * 1274126177) & 0x7FFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(DTYPE) / 65535.0


def _hash(ix, iy, iz, seed: int) -> torch.Tensor:
    """Hash of integer lattice points -> [0, 1]."""
    return _mix((ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed & 0x7FFFFFFF))


def _value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth 3D value noise in [0, 1] at points p [m, 3] (lattice spacing 1)."""
    i = torch.floor(p)
    f = p - i
    f = f * f * (3 - 2 * f)  # smoothstep weights, [m, 3]
    i = i.long()
    # Per-axis key terms of the lattice corners, shared by the 8 corners: [m] each.
    kx = [(i[:, 0] + c) * 73856093 ^ (seed & 0x7FFFFFFF) for c in (0, 1)]
    ky = [(i[:, 1] + c) * 19349663 for c in (0, 1)]
    kz = [(i[:, 2] + c) * 83492791 for c in (0, 1)]
    wx, wy, wz = [(1 - f[:, a], f[:, a]) for a in range(3)]
    out = torch.zeros_like(p[:, 0])
    for cx in (0, 1):
        for cy in (0, 1):
            kxy, wxy = kx[cx] ^ ky[cy], wx[cx] * wy[cy]
            for cz in (0, 1):
                out = out + wxy * wz[cz] * _mix(kxy ^ kz[cz])
    return out


def _fade(cycles_per_pixel: torch.Tensor) -> torch.Tensor:
    """1 for detail of 4+ pixels per period, 0 at 2 pixels (Nyquist), linear in between."""
    return (2 - 4 * cycles_per_pixel).clamp(0, 1)


def _fbm(p, footprint, seed: int, octaves) -> torch.Tensor:
    """Sum of value-noise octaves [(frequency per metre, amplitude)] in [-sum amp, sum amp], [m]."""
    out = torch.zeros_like(p[:, 0])
    for k, (freq, amp) in enumerate(octaves):
        out = out + amp * _fade(footprint * freq) * (2 * _value_noise(p * freq, seed + 7919 * k) - 1)
    return out


def _grout(coord, size: float, half_width: float, footprint):
    """Coverage in [0, 1] of joint lines every `size` metres along `coord` [m], area-preserving."""
    frac = torch.remainder(coord / size, 1.0)
    e = torch.minimum(frac, 1 - frac) * size  # distance to the nearest joint, metres
    w = torch.maximum(torch.full_like(footprint, half_width), footprint / 2)
    return (e < w).to(DTYPE) * (half_width / w)


def _lerp(a, b, t):
    return a + (b - a) * t


def _albedo(cls, points, normal_axis, footprint, obj_color, m: dict, seed: int):
    """Albedo [m, 3] of the hit points [m, 3] of surface classes cls [m]."""
    vec = lambda x: torch.as_tensor(x, dtype=DTYPE, device=points.device)  # noqa: E731
    x, y, z = points.unbind(-1)
    fp = footprint  # [m] metres per pixel at the hit
    albedo = torch.zeros_like(points)

    sel = cls == FLOOR
    if sel.any():
        s = m["tile_size"]
        p, f = points[sel], fp[sel]
        ix, iy = torch.floor(p[:, 0] / s).long(), torch.floor(p[:, 1] / s).long()
        a, b = vec(m["floor_colors"][0]), vec(m["floor_colors"][1])
        checker = ((ix + iy) & 1).to(DTYPE)[:, None]  # [m, 1]
        tile = _lerp(a, b, checker) * (1 + 0.3 * (_hash(ix, iy, ix * 0, seed + 1) - 0.5))[:, None]
        col = _lerp((a + b) / 2, tile, _fade(f / s)[:, None])
        joint = torch.maximum(_grout(p[:, 0], s, 0.008, f), _grout(p[:, 1], s, 0.008, f))
        col = col * (1 - 0.45 * joint)[:, None]
        col = col * (1 + _fbm(p, f, seed + 2, ((1.3, 0.12), (5.0, 0.08), (17.0, 0.06))))[:, None]
        albedo[sel] = col

    sel = cls == WALL
    if sel.any():
        w = m["stripe_width"]
        p, f = points[sel], fp[sel]
        u = torch.where(normal_axis[sel] == 0, p[:, 1], p[:, 0])  # horizontal coordinate on the wall
        k = torch.floor(u / w).long()
        wall = 2 * normal_axis[sel] + (p.gather(1, normal_axis[sel, None])[:, 0] > 0).long()  # which of the 4
        base = vec(m["wall_color"])
        stripe = torch.where((k & 1).bool(), 0.86, 1.0) * (1 + 0.16 * (_hash(k, wall, wall, seed + 3) - 0.5))
        shade = _lerp(torch.full_like(stripe, 0.93), stripe, _fade(f / w))  # [m]
        shade = torch.where(p[:, 2] < 0.1, shade * 0.55, shade)  # skirting board
        noise = _fbm(p, f, seed + 4, ((0.8, 0.12), (4.0, 0.07), (20.0, 0.05)))  # [m]
        col = base * shade[:, None] * (1 + noise)[:, None]
        albedo[sel] = col

    sel = cls == CEILING
    if sel.any():
        p, f = points[sel], fp[sel]
        noise = _fbm(p, f, seed + 5, ((1.0, 0.06), (6.0, 0.05)))  # [m]
        albedo[sel] = vec(m["ceiling_color"]) * (1 + noise)[:, None]

    sel = cls == GROUND
    if sel.any():
        s = m["slab_size"]
        p, f = points[sel], fp[sel]
        iy = torch.floor(p[:, 1] / s).long()
        xs = p[:, 0] + 0.5 * s * (iy & 1).to(DTYPE)  # running bond: alternate rows shifted
        ix = torch.floor(xs / s).long()
        a, b = vec(m["ground_colors"][0]), vec(m["ground_colors"][1])
        slab = _lerp(a, b, _hash(ix, iy, ix * 0, seed + 6)[:, None])
        col = _lerp((a + b) / 2, slab, _fade(f / s)[:, None])
        joint = torch.maximum(_grout(xs, s, 0.02, f), _grout(p[:, 1], s, 0.02, f))
        col = col * (1 - 0.4 * joint)[:, None]
        col = col * (1 + _fbm(p, f, seed + 7, ((0.15, 0.15), (1.1, 0.10), (6.0, 0.08))))[:, None]
        albedo[sel] = col

    sel = cls == OBJECT
    if sel.any():
        p, f = points[sel], fp[sel]
        noise = _fbm(p, f, seed + 8, ((2.5, 0.14), (9.0, 0.09)))  # [m]
        albedo[sel] = obj_color[sel] * (1 + noise)[:, None] + 0.25 * noise[:, None]  # additive: black too
    return albedo.clamp(0, 1)


def _sky(d, m: dict) -> torch.Tensor:
    """Sky colour [n, 3] by ray elevation."""
    zen = torch.as_tensor(m["sky_zenith"], dtype=DTYPE, device=d.device)
    hor = torch.as_tensor(m["sky_horizon"], dtype=DTYPE, device=d.device)
    t = d[:, 2].clamp(0, 1) ** 0.6
    return hor + (zen - hor) * t[:, None]


# ---------------------------------------------------------------------------------------------
# Casting and rendering
# ---------------------------------------------------------------------------------------------


def cast_rays(st: _SceneTensors, o: torch.Tensor, d: torch.Tensor) -> dict:
    """Nearest hits of rays o, d [n, 3]: distance [n] (inf = sky), normal [n, 3] world facing the
    ray, instance [n] (0 = background), column [n] (-1 = background), class [n], axis [n] (of the
    room or ground face hit)."""
    t, normal, cls, axis = _hit_environment(o, d, st, st.scene.domain == "indoor")
    column = torch.full_like(cls, -1)  # [n]
    instance = torch.zeros_like(cls)  # [n]
    if st.columns:
        hits = [_HIT[c](o, d, p) for c, (_, p) in st.groups.items()]
        t_all = torch.cat([h[0] for h in hits], dim=1)  # [n, P_all]
        part_all = torch.cat([h[1] for h in hits], dim=1)  # [n, P_all]
        t_obj, col = t_all.min(1)  # [n]
        on_obj = t_obj < t
        column = torch.where(on_obj, col, column)
        instance = torch.where(on_obj, st.ids[col], instance)
        t = torch.where(on_obj, t_obj, t)
        cls = torch.where(on_obj, OBJECT, cls)
        part = part_all.gather(1, col[:, None])[:, 0]  # [n] face / cap of the winning primitive
        points = o + t.clamp(max=1e9)[:, None] * d  # [n, 3]
        for category, (first, p) in st.groups.items():
            sel = on_obj & (col >= first) & (col < first + p["center"].shape[0])
            if sel.any():
                normal[sel] = _object_normals(category, p, col[sel] - first, part[sel], points[sel], d[sel])
    flip = torch.where((normal * d).sum(-1, keepdim=True) > 0, -1.0, 1.0).to(DTYPE)  # face the camera
    return {"distance": t, "normal": normal * flip, "instance": instance, "column": column, "class": cls,
            "axis": axis}


def render_views(scene: Scene, K: torch.Tensor, w2c: torch.Tensor, height: int, width: int,
                 device=None, chunk: int = 1 << 18) -> dict:
    """Render views of `scene` with cameras K [V, 3, 3] and w2c [V, 4, 4] (OpenCV, world-to-camera).

    Returns float32/int64 CPU tensors: images [V, 3, H, W] in [0, 1], depth [V, H, W] (z-depth,
    metres, 0 = sky), valid [V, H, W] bool, normals [V, 3, H, W] (unit, camera frame, towards the
    camera, 0 on sky), instances [V, H, W] (object id, 0 = room/ground/sky), distance [V, H, W]
    (ray length, metres, 0 = sky). `device` defaults to the CPU (bit-reproducible).
    """
    if K.ndim != 3 or K.shape[-2:] != (3, 3) or w2c.shape != (K.shape[0], 4, 4):
        raise ValueError(f"render_views: expected K [V, 3, 3] and w2c [V, 4, 4], got {list(K.shape)} "
                         f"and {list(w2c.shape)}")
    device = torch.device(device or "cpu")
    st = _SceneTensors(scene, device)
    K = K.to(device, DTYPE)
    w2c = w2c.to(device, DTYPE)
    V, H, W = K.shape[0], int(height), int(width)
    origins, dirs = cameras.pixel_rays(K, w2c, H, W)  # [V, H, W, 3] each
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)  # [N, 3]
    # Metres per pixel at unit distance, per ray (for texture filtering).
    per_pixel = (1 / (K[:, 0, 0] * K[:, 1, 1]).sqrt())[:, None].expand(V, H * W).reshape(-1)  # [N]
    m, seed = scene.materials, int(scene.materials.get("texture_seed", 0))
    colors = torch.zeros_like(o)
    outs = {k: [] for k in ("distance", "normal", "instance")}
    for s in range(0, o.shape[0], chunk):
        oc, dc = o[s:s + chunk], d[s:s + chunk]
        hit = cast_rays(st, oc, dc)
        t, normal, cls = hit["distance"], hit["normal"], hit["class"]
        sky = cls == SKY
        tt = torch.where(sky, 0.0, t)  # [n]
        points = oc + tt[:, None] * dc  # [n, 3]
        cos = (normal * dc).sum(-1).abs().clamp(min=0.2)  # [n] grazing angles stretch the footprint
        footprint = tt * per_pixel[s:s + chunk] / cos  # [n] metres per pixel at the hit
        obj_color = torch.zeros_like(oc)
        if st.columns:
            obj_color = st.colors[hit["column"].clamp(min=0)]  # [n, 3]
        albedo = _albedo(cls, points, hit["axis"], footprint, obj_color, m, seed)  # [n, 3]
        shade = scene.ambient + scene.diffuse * (normal @ st.light).clamp(min=0)  # [n]
        rgb = (albedo * shade[:, None]).clamp(0, 1)
        if sky.any():
            rgb[sky] = _sky(dc[sky], m)
        colors[s:s + chunk] = rgb
        outs["distance"].append(tt)
        outs["normal"].append(torch.where(sky[:, None], 0.0, normal))
        outs["instance"].append(hit["instance"])
    distance = torch.cat(outs["distance"]).reshape(V, H, W)  # [V, H, W]
    normal_w = torch.cat(outs["normal"]).reshape(V, H, W, 3)  # [V, H, W, 3] world
    R = w2c[:, :3, :3]  # [V, 3, 3]
    depth = distance * (dirs * R[:, None, None, 2, :]).sum(-1)  # [V, H, W], t * (d . camera z axis)
    normals = torch.einsum("vij,vhwj->vihw", R, normal_w)  # [V, 3, H, W] camera frame
    return {
        "images": colors.reshape(V, H, W, 3).permute(0, 3, 1, 2).float().cpu().contiguous(),
        "depth": depth.float().cpu(),
        "valid": (distance > 0).cpu(),
        "normals": normals.float().cpu().contiguous(),
        "instances": torch.cat(outs["instance"]).reshape(V, H, W).cpu(),
        "distance": distance.float().cpu(),
    }
