"""An endoscopic clip in, a simulatable scene and one interaction out.

    python -m endogsim.demo --clip data/endogsim/synthetic --out out/ [--action poke|cut|retract]
    python -m endogsim.demo --clip CLIP --model results/endogsim/recon/model --labels liver,kidney

`--clip` is an EndoNeRF-layout folder (images/, depth/, masks/ with white = tool, poses_bounds.npy;
`python -c "from endogsim.synthetic_scene import make_surgical_scene as m; m('clip')"` writes one).
The demo trains the 4DGS on it (or loads `--model`, a `GaussianModel` folder), decomposes the
reconstruction into the tool, the static support and `--labels` tissues (k-means, left to right),
gives each tissue the literature table's material for its label, saves the scene and runs one
interaction. Refining the materials needs a known force on the tissue: `endogsim.reproduce` does it
on the synthetic clip. Writes OUT/scene/ (`PhysicsScene.save`), OUT/recon/ (when trained) and
OUT/sim_<action>/ (frames, simulation.gif, states.npz, summary.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import OneLineParser, add_threads_flag, check_out_dir, one_line_errors, set_threads
from common.viewer import add_view_flag
from common.datasets import DatasetError, read_endonerf

from .config import DEFAULT_CONFIG, load_config
from .material_prior import canonical_class

ACTIONS = ("poke", "cut", "retract")


def _parser() -> argparse.ArgumentParser:
    ap = OneLineParser("endogsim.demo", description=__doc__)
    ap.add_argument("--clip", required=True, help="EndoNeRF-layout clip folder")
    ap.add_argument("--out", default="results/endogsim/demo", metavar="DIR",
                    help="output folder (default: results/endogsim/demo)")
    ap.add_argument("--model", default=None, metavar="DIR",
                    help="a trained GaussianModel folder (default: train one on the clip first)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="4DGS config (tiny.yaml or paper.yaml)")
    ap.add_argument(
        "--labels",
        default="liver,kidney",
        help="comma list: one material-table label per tissue, left to right (liver, kidney, fat, ...)",
    )
    ap.add_argument("--action", default="poke", choices=ACTIONS, help="the interaction simulated (default: poke)")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config key=value, e.g. recon.steps=300")
    add_view_flag(ap)
    return ap


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    with one_line_errors("endogsim.demo"):
        clip, out = Path(args.clip), Path(args.out)
        if not (clip / "images").is_dir():
            raise DatasetError(
                clip, "expected an EndoNeRF-layout clip folder (images/, depth/, masks/, poses_bounds.npy)"
            )
        labels = [s.strip() for s in args.labels.split(",") if s.strip()]
        unknown = [lab for lab in labels if canonical_class(lab) is None]
        if not labels or unknown:
            raise ValueError(
                f"--labels: unknown material label(s) {unknown or labels} (expected e.g. liver,kidney)"
            )
        if args.model is not None and not (Path(args.model) / "config.json").is_file():
            raise DatasetError(Path(args.model), "--model: expected a GaussianModel folder with config.json")
        if args.threads < 0:
            raise ValueError(f"--threads: expected >= 0, got {args.threads}")
        check_out_dir("--out", out)
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        sample = read_endonerf(clip, depth_scale=cfg.recon.depth_scale)  # every file checked before any work
        if sample.depth is None or "tool" not in sample.masks:
            raise DatasetError(clip, "expected depth/ and masks/ (white = tool) beside images/")
    with one_line_errors(
        "endogsim.demo"
    ):  # what the clip turns out to hold (no support, no tissue) is one line too
        return _run(args, cfg, clip, out, sample, labels)


def _run(args, cfg, clip: Path, out: Path, sample, labels: list) -> dict:
    from .gaussians import GaussianModel
    from .scene import PhysicsScene
    from .simulate import run_action
    from .train import train_reconstruction

    out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        model = train_reconstruction(cfg.recon, clip, out / "recon")
    else:
        model = GaussianModel.from_pretrained(args.model, use_safetensors=True).eval()
    scene = PhysicsScene.from_gaussian_model(model, sample, n_tissues=len(labels), tissue_labels=labels)
    scene.save(out / "scene")
    summary = run_action(scene, args.action, out / f"sim_{args.action}")
    print(
        f"scene: {[(o.name, o.kind) for o in scene.objects]}, {len(scene.particles.x)} particles, "
        f"E {[round(m.E) for m in scene.materials]} Pa (table); {args.action}: largest displacement "
        f"{1e3 * summary['max_displacement_m']:.2f} mm; wrote {out}/scene, {out}/sim_{args.action}"
    )
    if args.view:  # the simulation's frames under a time slider in the browser, until Ctrl-C
        from .view import view_simulation

        view_simulation(out / f"sim_{args.action}", scene)
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
