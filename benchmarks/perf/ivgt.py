"""IVGT: forward time and peak memory against the number of views (tiny config, random weights),
mesh extraction, coarse-to-fine band against dense marching cubes, at 128 / 256 / 512 cells, and
the whole `ivgt.demo` against the number of views (2, 8, 20, 40 synthetic photos of 256x256, each view
rendered from its `ivgt.demo.RENDER_VIEWS` nearest views as the demo does: seconds and peak memory per
stage, each run in a fresh process).

The mesh cases use the analytic sphere SDF (ivgt.analytic.sphere_sdf) so that dense 512^3 runs in
seconds on a CPU; the SDF-query counts are the same for any SDF with the same zero set, and a
learned SDF costs far more per query (the case "SDF query, tiny model" measures it), so for the
model the counts are what to read: the notes project the learned-field time from them.

Peak memory: the harness's column is the growth of the resident set over what the process
already holds, which reads ~0 on CPU once earlier cases have grown the heap; each case's memory
is therefore also measured in a fresh Python process (`extra["fresh_process_peak_mb"]`: peak RSS
during the call minus the RSS before it, after imports and set-up).

Paper scale, counted on the `meta` device with `torch.utils.flop_counter` (no weights): paper.yaml's
model (ViT-L DINOv2 patch embedding, 24 frame/global block pairs of 1024, 518 px): parameters,
FLOPs of the feed-forward pass over train.input_views views, FLOPs per SDF query of the scene those
views make, and what dense meshing costs at 512^3 against coarse-to-fine (with the query count the
sphere case measured in the same run at its largest resolution; a scene's count depends on its
surface area).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

from benchmarks.perf import Measurement, PerfReport, count_flops
from common.metrics import point_cloud_metrics
from ivgt.analytic import sphere_sdf
from ivgt.config import ModelConfig
from ivgt.mesh import extract_coarse_to_fine, extract_dense
from ivgt.model import IVGT

_FRESH = """
import json, torch
from benchmarks.perf import peak_memory_mb
torch.set_num_threads({threads})
torch.manual_seed(0)
{setup}
def call():
{call}
print(json.dumps(peak_memory_mb(call)))
"""


def fresh_peak_mb(setup: str, call: str) -> float | None:
    """Peak RSS growth (MiB) of `call` in a new Python process after `setup` (CPU only)."""
    code = _FRESH.format(threads=torch.get_num_threads(), setup=setup, call=textwrap.indent(call, "    "))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def paper_scale_cost() -> dict:
    """Parameters, forward FLOPs and FLOPs per SDF query of paper.yaml's model on `meta`."""
    from pathlib import Path

    from ivgt.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "ivgt" / "configs" / "paper.yaml")
    with torch.device("meta"):
        model = IVGT.from_model_config(cfg.model).eval()
    views, (H, W) = cfg.train.input_views, cfg.model.image_size
    x = torch.empty(1, views, 3, H, W, device="meta")
    forward_flops, out = count_flops(lambda: model(x))  # autograd on: the counter's hooks need grad_fns
    scene = model.scene_from_outputs(x, out)
    n = 16384
    query_flops, _ = count_flops(lambda: scene.query(torch.empty(n, 3, device="meta")))
    return {"params": sum(p.numel() for p in model.parameters()), "views": views, "size": (H, W),
            "forward_flops": forward_flops, "query_flops": query_flops / n}


def _mib(value) -> str:
    return "unmeasured (the subprocess failed)" if value is None else f"{value:.1f} MiB"


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("ivgt", "IVGT forward vs views; SDF mesh extraction coarse-to-fine vs dense")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = IVGT.from_model_config(ModelConfig()).eval().to(device)
    model_setup = ("from ivgt.config import ModelConfig\nfrom ivgt.model import IVGT\n"
                   "model = IVGT.from_model_config(ModelConfig()).eval()\n")
    for views in ((2, 4, 8) if quick else (2, 4, 8, 16, 32)):
        x = torch.rand(1, views, 3, 64, 64, device=device)

        def forward(x=x):
            with torch.no_grad():
                return model(x)

        rows = report.compare(f"forward, tiny, {views} views of 64x64", {"ivgt": forward}, items=views, unit="views",
                              repeats=3, device=device)
        if device == "cpu":
            rows[0].extra["fresh_process_peak_mb"] = fresh_peak_mb(
                model_setup + f"x = torch.rand(1, {views}, 3, 64, 64)", "with torch.no_grad():\n    model(x)")

    # The learned field's cost per SDF query (4 views; the scene of random images).
    images = torch.rand(4, 3, 64, 64, device=device)
    scene = model.reconstruct(images)
    points = torch.rand(16384, 3, device=device) * 2 - 1 + torch.tensor([0.0, 0.0, 2.0], device=device)
    row = report.compare("SDF query, tiny model, 4 views, 16384 points", {"ivgt": lambda: scene.sdf(points)},
                         items=16384, unit="queries", repeats=3, device=device)[0]
    per_query_s = row.median_s / 16384

    bounds = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    mesh_setup = ("import torch\nfrom ivgt.analytic import sphere_sdf\n"
                  "from ivgt.mesh import extract_coarse_to_fine, extract_dense\n"
                  "bounds = torch.tensor([[-1.0] * 3, [1.0] * 3])\n")
    for res in ((64, 128) if quick else (128, 256, 512)):
        stats, meshes = {}, {}

        def dense(res=res):
            v, _, s = extract_dense(sphere_sdf, bounds, res)
            stats["dense"], meshes["dense"] = s["sdf_queries"], v

        def c2f(res=res):
            v, _, s = extract_coarse_to_fine(sphere_sdf, bounds, res, levels=3)
            stats["c2f"], meshes["c2f"] = s["sdf_queries"], v

        rows = report.compare(f"mesh extraction, sphere SDF, {res}^3 cells", {"dense": dense, "coarse-to-fine": c2f},
                              repeats=1 if res >= 512 else 2, warmup=0 if res >= 512 else 1)
        rows[0].extra["sdf_queries"], rows[1].extra["sdf_queries"] = stats["dense"], stats["c2f"]
        if device == "cpu":
            rows[0].extra["fresh_process_peak_mb"] = fresh_peak_mb(mesh_setup, f"extract_dense(sphere_sdf, bounds, {res})")
            rows[1].extra["fresh_process_peak_mb"] = fresh_peak_mb(
                mesh_setup, f"extract_coarse_to_fine(sphere_sdf, bounds, {res}, levels=3)")
        chamfer = point_cloud_metrics(meshes["c2f"], meshes["dense"])["chamfer"]
        voxel = 2.0 / res
        mem = ""
        if device == "cpu":
            mem = (f"; fresh-process peak memory dense {_mib(rows[0].extra['fresh_process_peak_mb'])}, "
                   f"coarse-to-fine {_mib(rows[1].extra['fresh_process_peak_mb'])}")
        report.notes.append(
            f"{res}^3: SDF queries dense {stats['dense']:,} vs coarse-to-fine {stats['c2f']:,} "
            f"({stats['dense'] / stats['c2f']:.1f}x fewer); {len(meshes['dense']):,} vertices; "
            f"Chamfer(c2f, dense) = {chamfer / voxel:.2g} voxel{mem}; with the tiny model's measured "
            f"{per_query_s * 1e6:.0f} us per query, the learned field would take ~{stats['dense'] * per_query_s:,.0f} s "
            f"dense vs ~{stats['c2f'] * per_query_s:,.0f} s coarse-to-fine (projection from the counts)")
    c = paper_scale_cost()
    dense512 = 513**3 * c["query_flops"]  # extract_dense queries the (res + 1)^3 cell corners
    c2f512 = stats["c2f"] * (512 / res) ** 2 * c["query_flops"]
    report.notes.append(
        f"paper scale (meta device, paper.yaml): {c['params'] / 1e9:.2f} B parameters "
        f"({2 * c['params'] / 2**30:.1f} GiB in bf16), forward over "
        f"{c['views']} views of {c['size'][1]}x{c['size'][0]} {c['forward_flops'] / 1e12:.1f} TFLOPs; "
        f"one SDF query {c['query_flops'] / 1e6:.2f} MFLOPs, so dense 512^3 meshing {dense512 / 1e12:.0f} "
        f"TFLOPs vs coarse-to-fine {c2f512 / 1e12:.0f} TFLOPs with the query count of the sphere case at "
        f"{res}^3" + (" scaled by (512 / res)^2 (the band grows with the surface)" if res != 512 else ""))
    trained_meshing(report, device, 32 if quick else 64)
    if quick:
        demo_scaling(report, views=(2, 4), size=64, mesh_resolution=16)
    else:
        demo_scaling(report, views=(2, 8, 20, 40), size=256, mesh_resolution=64)
    if device == "cpu":
        report.notes.append("forward fresh-process peak memory: " + ", ".join(
            f"{r.items:g} views {_mib(r.extra.get('fresh_process_peak_mb'))}" for r in report.rows
            if r.case.startswith("forward")))
    return report


TRAINED_RUNS = ("results/ivgt/run/model", "results/ivgt/benchmark/model")


def trained_meshing(report: PerfReport, device: str, res: int) -> None:
    """Dense against coarse-to-fine meshing timed on a trained model's SDF (the first test scene's
    4 views), where a trained run exists (`make reproduce-ivgt` or `make benchmark`)."""
    from pathlib import Path

    from common.datasets import SceneDataset

    path = next((Path(p) for p in TRAINED_RUNS if (Path(p) / "config.json").is_file()), None)
    data = Path("data/synthetic/test")
    if path is None or not (data / "index.json").is_file():
        report.notes.append("trained-SDF meshing: skipped (no trained run or no make data)")
        return
    model = IVGT.load(path).to(device).eval()
    scene = model.reconstruct(SceneDataset("data/synthetic", "test")[0].images[:4].to(device))
    pts = scene.points()
    lo, hi = pts.min(0).values, pts.max(0).values
    bounds = torch.stack([lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)]).cpu()

    @torch.no_grad()
    def sdf(x):
        return scene.query(x.to(device))[0].cpu()

    stats = {}

    def dense():
        stats["dense"] = extract_dense(sdf, bounds, res)

    def c2f():
        stats["c2f"] = extract_coarse_to_fine(sdf, bounds, res, levels=3)

    case = f"mesh extraction, trained IVGT SDF ({path.parent.name}), {res}^3 cells"
    rows = report.compare(case, {"dense": dense, "coarse-to-fine": c2f}, items=1, unit="meshes",
                          repeats=1, warmup=0, device=device)
    (vd, _, sd), (vc, _, sc) = stats["dense"], stats["c2f"]
    chamfer = point_cloud_metrics(vc, vd)["chamfer"] if len(vc) and len(vd) else float("nan")
    report.notes.append(
        f"trained SDF {res}^3: {rows[0].median_s:.1f} s dense vs {rows[1].median_s:.1f} s coarse-to-fine "
        f"({sd['sdf_queries']:,} vs {sc['sdf_queries']:,} queries), {len(vd):,} vs {len(vc):,} vertices, "
        f"Chamfer(c2f, dense) {chamfer:.3g} (scene units)")


_DEMO = """
import json, resource, sys, threading, time
import psutil, torch
torch.set_num_threads({threads})
from ivgt.config import load_config
from ivgt.demo import run_demo
from ivgt.model import IVGT
torch.manual_seed(0)
model = IVGT.from_model_config(load_config({config!r}).model).eval().requires_grad_(False)
proc, samples, done = psutil.Process(), [], threading.Event()
def sample():
    while not done.is_set():
        samples.append((time.perf_counter(), proc.memory_info().rss))
        time.sleep(0.005)
thread = threading.Thread(target=sample, daemon=True)
start = time.perf_counter()
thread.start()
info = run_demo({images!r}, {out!r}, model, mesh_resolution={mesh_resolution}, render_views={render_views})
done.set()
thread.join()
total = time.perf_counter() - start
# The high-water mark of this address space: ru_maxrss survives fork + exec, so it would read the
# parent benchmark's peak when that was larger (it did: 1,144 MiB for every V).
try:
    peak = int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) * 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
# Stage windows in order (reading and writing the rest fall between them): the sampled peak in each.
edges, t = {{}}, start
for name in ("read", "reconstruct", "render", "mesh"):
    seconds = info["seconds"][name]
    edges[name] = (t, t + seconds)
    t += seconds
stage_peak = {{k: max([r for s, r in samples if a <= s <= b] or [0]) / 2**20 for k, (a, b) in edges.items()}}
print(json.dumps({{"seconds": info["seconds"], "total_s": total, "peak_rss_mb": peak / 2**20,
                  "stage_peak_rss_mb": stage_peak, "vertices": info["mesh"]["vertices"],
                  "sdf_queries": info["mesh"]["sdf_queries"]}}))
"""


def demo_scaling(report: PerfReport, views=(2, 8, 20, 40), size: int = 256, mesh_resolution: int = 64,
                 render_views: int | None = None) -> None:
    """`ivgt.demo` (run_demo: read the photos, reconstruct, render every view from its
    `render_views` nearest views (default: the demo's; 0: all) and write its maps, mesh from all
    views) on the first V views of one synthetic indoor scene's photos, the tiny config's
    random-weight model (the cost hardly depends on the weights), each V in a fresh process on this
    process's torch threads: total and per-stage seconds, peak RSS of the whole process (VmHWM;
    `ru_maxrss` off Linux) and the sampled peak within each stage. One row per V; the notes give
    the growth against V."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from common.synthetic import generate_scene

    from ivgt.demo import RENDER_VIEWS

    render_views = RENDER_VIEWS if render_views is None else render_views
    config = str(Path(__file__).parents[2] / "ivgt" / "configs" / "tiny.yaml")
    sample, _ = generate_scene(0, "indoor", num_views=max(views), size=size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in range(max(views)):
            rgb = (sample.images[v].permute(1, 2, 0).numpy() * 255).round().astype("uint8")  # [H, W, 3]
            Image.fromarray(rgb).save(Path(tmp) / f"view_{v:03d}.png")
        for V in views:
            folder = Path(tmp) / f"photos_{V}"
            folder.mkdir()
            for v in range(V):
                (folder / f"view_{v:03d}.png").symlink_to(Path(tmp) / f"view_{v:03d}.png")
            code = _DEMO.format(threads=torch.get_num_threads(), config=config, images=str(folder),
                                out=str(Path(tmp) / f"out_{V}"), mesh_resolution=mesh_resolution,
                                render_views=render_views)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200)
            if out.returncode != 0:
                report.notes.append(f"demo, {V} views: failed ({out.stderr.strip().splitlines()[-1:]})")
                continue
            r = results[V] = json.loads(out.stdout.strip().splitlines()[-1])
            each = f"{render_views} nearest" if render_views else "all"
            report.add(Measurement(impl="ivgt.demo", case=f"demo, {V} views of {size}x{size} (rendered from {each}), "
                                                          f"mesh {mesh_resolution}^3",
                                   median_s=r["total_s"], q25_s=r["total_s"], q75_s=r["total_s"], repeats=1,
                                   items=V, unit="views", peak_memory_mb=r["peak_rss_mb"], extra=r))
    if not results:
        return
    base = min(results)
    for V, r in sorted(results.items()):
        sec, mem = r["seconds"], r["stage_peak_rss_mb"]
        report.notes.append(
            f"demo {V} views: {r['total_s']:.1f} s in all (x{r['total_s'] / results[base]['total_s']:.1f} the {base}-view "
            f"run; V / {base} = {V / base:.0f}, (V / {base})^2 = {(V / base) ** 2:.0f}); each view rendered from "
            f"{f'its {render_views} nearest views' if render_views else 'all views'}; reconstruct {sec['reconstruct']:.2f} s / {mem['reconstruct']:.0f} MiB, "
            f"render + write {sec['render']:.1f} s ({sec['render'] / V:.2f} s per view) / {mem['render']:.0f} MiB, "
            f"mesh {sec['mesh']:.1f} s ({r['sdf_queries']:,} SDF queries) / {mem['mesh']:.0f} MiB; "
            f"whole-process peak RSS {r['peak_rss_mb']:.0f} MiB")
