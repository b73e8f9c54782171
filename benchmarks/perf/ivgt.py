"""IVGT: forward time and peak memory against the number of views (tiny config, random weights),
and mesh extraction, coarse-to-fine band against dense marching cubes, at 128 / 256 / 512 cells.

The mesh cases use the analytic sphere SDF (ivgt.analytic.sphere_sdf) so that 512^3 runs in
reasonable time on a CPU; the SDF-query counts are the same for any SDF with the same zero set,
and the time of a learned SDF scales with the count (a query of the tiny model costs ~65 us on one
CPU thread, so the counts are what to read).
"""

from __future__ import annotations

import torch

from benchmarks.perf import PerfReport
from ivgt.analytic import sphere_sdf
from ivgt.config import ModelConfig
from ivgt.mesh import extract_coarse_to_fine, extract_dense
from ivgt.model import IVGT


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("ivgt", "IVGT forward vs views; SDF mesh extraction coarse-to-fine vs dense")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = IVGT.from_model_config(ModelConfig()).eval().to(device)
    for views in ((2, 4, 8) if quick else (2, 4, 8, 16, 32)):
        x = torch.rand(1, views, 3, 64, 64, device=device)

        def forward(x=x):
            with torch.no_grad():
                return model(x)

        report.compare(f"forward, tiny, {views} views of 64x64", {"ivgt": forward}, items=views, unit="views",
                       repeats=3, device=device)
    bounds = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    for res in ((64, 128) if quick else (128, 256, 512)):
        stats = {}

        def dense(res=res):
            stats["dense"] = extract_dense(sphere_sdf, bounds, res)[2]["sdf_queries"]

        def c2f(res=res):
            stats["c2f"] = extract_coarse_to_fine(sphere_sdf, bounds, res, levels=3)[2]["sdf_queries"]

        rows = report.compare(f"mesh extraction, sphere SDF, {res}^3 cells", {"dense": dense, "coarse-to-fine": c2f},
                              repeats=1 if res >= 512 else 2, warmup=0 if res >= 512 else 1)
        rows[0].extra["sdf_queries"], rows[1].extra["sdf_queries"] = stats["dense"], stats["c2f"]
        report.notes.append(f"{res}^3: SDF queries dense {stats['dense']:,} vs coarse-to-fine {stats['c2f']:,} "
                            f"({stats['dense'] / stats['c2f']:.1f}x fewer)")
    return report
