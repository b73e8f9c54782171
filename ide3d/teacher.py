"""The frozen 3D teacher of the global consistency loss, and how one is plugged in.

The paper uses a 3D foundation model (VGGT-1B / FLARE); the official code aligns to VGGT's last
aggregator layer, pre-extracted per scene. No such weights can be downloaded here, so the default
teacher is `GeometryTeacher`, a small VGGT-like multi-view network (patch tokens, alternating
frame and global attention, a camera token per frame) trained on the synthetic train split to
predict each frame's depth and its pose relative to the first frame, then frozen. Its feature is
the last block's patch tokens, [F, g, g, dim] per scene, as VGGT's aggregator tokens are.

Any other teacher plugs in through `SupervisionConfig.teacher`: a local `GeometryTeacher` folder, or
a `module:callable` that returns an object with `feature_dim` and `features(frames [F, 3, H, W]
in [0, 1], K [F, 3, 3], w2c [F, 4, 4]) -> [F, h, w, feature_dim]` (e.g. a wrapper around a local
VGGT checkpoint). Features are extracted once per scene and cached as safetensors.

    python -m ide3d.teacher --config ide3d/configs/tiny.yaml     # trains the builtin teacher
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from safetensors.torch import save_file
from tqdm import tqdm

from common.cameras import axis_angle_to_matrix, relative_pose
from common.checkpoint import check_weights_folder, load_safetensors


class GeometryTeacher(ModelMixin, ConfigMixin):
    """Frames [B, F, 3, S, S] in [0, 1] -> features [B, F, g, g, dim], log-depth [B, F, S, S],
    pose of each frame relative to frame 0 (camera-0 to camera-f, [B, F, 4, 4])."""

    @register_to_config
    def __init__(
        self, image_size: int = 64, patch_size: int = 8, dim: int = 64, layers: int = 4, heads: int = 4
    ):
        super().__init__()
        g = image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.randn(1, g * g, dim) * 0.02)
        self.camera_token = nn.Parameter(torch.randn(2, dim) * 0.02)  # first frame / other frames (VGGT)

        def block():
            return nn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
            )

        # Alternating attention (VGGT): even blocks within each frame, odd blocks over all frames.
        self.blocks = nn.ModuleList([block() for _ in range(2 * layers)])
        self.norm = nn.LayerNorm(dim)
        self.depth_head = nn.Linear(dim, patch_size * patch_size)
        self.pose_head = nn.Linear(dim, 6)  # axis-angle, translation (metres)

    def forward(self, frames: torch.Tensor) -> tuple:
        B, Fr = frames.shape[:2]
        p, g = self.config.patch_size, self.config.image_size // self.config.patch_size
        x = (
            self.patch_embed(frames.flatten(0, 1) * 2 - 1).flatten(2).transpose(1, 2) + self.pos
        )  # [B*F, g*g, D]
        cam = self.camera_token[torch.tensor([0] + [1] * (Fr - 1), device=frames.device)]  # [F, D]
        x = torch.cat([cam.repeat(B, 1)[:, None], x], 1)  # [B*F, 1 + g*g, D]
        T = x.shape[1]
        for i, blk in enumerate(self.blocks):
            x = blk(x) if i % 2 == 0 else blk(x.reshape(B, Fr * T, -1)).reshape(B * Fr, T, -1)
        x = self.norm(x)
        tokens = x[:, 1:]  # [B*F, g*g, D]
        depth = self.depth_head(tokens).transpose(1, 2)  # [B*F, p*p, g*g]
        log_depth = F.fold(depth, output_size=(g * p, g * p), kernel_size=p, stride=p)[:, 0]  # [B*F, S, S]
        pose = self.pose_head(x[:, 0]).reshape(B, Fr, 6)  # [B, F, 6]
        T_rel = torch.zeros(B, Fr, 4, 4, device=frames.device, dtype=frames.dtype)
        T_rel[..., :3, :3] = axis_angle_to_matrix(pose[..., :3])
        T_rel[..., :3, 3] = pose[..., 3:]
        T_rel[..., 3, 3] = 1
        return tokens.reshape(B, Fr, g, g, -1), log_depth.reshape(B, Fr, g * p, g * p), T_rel

    @property
    def feature_dim(self) -> int:
        return self.config.dim

    @torch.no_grad()
    def features(self, frames: torch.Tensor, K=None, w2c=None) -> torch.Tensor:
        """One scene: frames [F, 3, H, W] in [0, 1] -> [F, g, g, dim] (K, w2c unused: RGB only)."""
        S = self.config.image_size
        x = F.interpolate(frames.float(), size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return self(x[None].to(self.device))[0][0]


def teacher_loss(model: GeometryTeacher, frames, depth, w2c) -> torch.Tensor:
    """frames [B, F, 3, S, S], depth [B, F, S, S] (0 invalid), w2c [B, F, 4, 4] -> L1 on log-depth +
    L1 on the relative rotation matrices and translations (metres)."""
    _, log_depth, T_rel = model(frames)
    valid = depth > 0
    l_depth = (log_depth - torch.log(depth.clamp_min(1e-3))).abs()[valid].mean()
    gt = relative_pose(w2c[:, :1], w2c)  # [B, F, 4, 4] camera 0 -> camera f
    l_pose = (T_rel[..., :3, :3] - gt[..., :3, :3]).abs().mean() + (
        T_rel[..., :3, 3] - gt[..., :3, 3]
    ).abs().mean()
    return l_depth + l_pose


def train_teacher(cfg, scenes, out: Path, progress: bool = True) -> GeometryTeacher:
    """Train the builtin teacher on `scenes` (training `Scene`s of `ide3d.data`), save it to `out`."""
    t = cfg.teacher
    torch.manual_seed(cfg.train.seed)
    model = GeometryTeacher(
        image_size=t.image_size, patch_size=t.patch_size, dim=t.dim, layers=t.layers, heads=t.heads
    )
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=0.0)
    S = t.image_size

    def resized(scene):
        frames = F.interpolate(
            scene.frames, size=(S, S), mode="bilinear", align_corners=False, antialias=True
        )
        depth = F.interpolate(scene.depth[:, None], size=(S, S), mode="nearest")[:, 0]
        return frames, depth, scene.w2c

    data = [resized(s) for s in scenes]
    bar = tqdm(range(t.steps), desc="ide3d teacher", disable=not progress)
    for step in bar:
        rng = np.random.default_rng([cfg.train.seed, 7, step])
        idx = rng.choice(len(data), size=min(t.batch_size, len(data)), replace=False)
        frames, depth, w2c = (torch.stack([data[i][k] for i in idx]) for k in range(3))
        lr = t.lr * 0.5 * (1 + math.cos(math.pi * step / t.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = teacher_loss(model, frames, depth, w2c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval().requires_grad_(False)
    model.save_pretrained(out)
    (Path(out) / "teacher_training.json").write_text(
        json.dumps({"steps": t.steps, "final_loss": loss.item(), "train_scenes": len(scenes)}, indent=1)
    )
    return model


def load_teacher(scfg):
    """The frozen teacher named by `SupervisionConfig.teacher` (module docstring)."""
    spec = scfg.teacher
    if spec == "builtin":
        spec = scfg.teacher_path
    if ":" in spec and not Path(spec).exists():
        module, _, name = spec.partition(":")
        try:
            teacher = getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"supervision.teacher: cannot load {spec!r} ({exc})") from None
        for attr in ("features", "feature_dim"):
            if not hasattr(teacher, attr):
                raise ValueError(f"supervision.teacher: {spec!r} returned an object without `{attr}`")
        return teacher
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no teacher here (train one with `python -m ide3d.teacher`, or set "
            "supervision.teacher to a GeometryTeacher folder or a module:callable)"
        )
    check_weights_folder(path)
    return GeometryTeacher.from_pretrained(path, use_safetensors=True).eval().requires_grad_(False)


def teacher_id(scfg) -> str:
    """A short name for the teacher's cache folder, changing with its weights (or its spec)."""
    spec = scfg.teacher_path if scfg.teacher == "builtin" else scfg.teacher
    weights = Path(spec) / "diffusion_pytorch_model.safetensors"
    digest = hashlib.sha1(weights.read_bytes() if weights.is_file() else spec.encode()).hexdigest()[:12]
    return digest


def cached_features(teacher, scenes, cache_dir: Path) -> list[torch.Tensor]:
    """Per scene [F, h, w, D], computed once and cached as `<cache_dir>/<scene_id>.safetensors`
    (keyed by the scene's frames, so another frame selection is not confused with this one)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for s in scenes:
        path = cache_dir / f"{s.scene_id}-{'_'.join(map(str, s.frame_ids))}.safetensors"
        if path.is_file():
            out.append(load_safetensors(path)["features"])
            continue
        feats = teacher.features(s.frames, s.K, s.w2c).float().cpu().contiguous()  # [F, h, w, D]
        if feats.ndim != 4 or feats.shape[0] != s.frames.shape[0]:
            raise ValueError(
                f"teacher features: expected [F={s.frames.shape[0]}, h, w, D], got {list(feats.shape)}"
            )
        tmp = path.with_suffix(".tmp")
        save_file({"features": feats}, str(tmp))
        tmp.replace(path)
        out.append(feats)
    return out


def main(argv=None) -> None:
    from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
    from ide3d.config import load_config
    from ide3d.data import ensure_data, load_scenes

    ap = OneLineParser("ide3d.teacher", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config; its teacher section and supervision.teacher_path (default: configs/tiny.yaml)")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. teacher.steps=100")
    args = ap.parse_args(argv)
    with one_line_errors("ide3d.teacher"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        ensure_data(cfg.data)
        scenes = load_scenes(cfg.data, cfg.data.train_split, seed=cfg.train.seed)
        train_teacher(cfg, scenes, Path(cfg.supervision.teacher_path))
    print(cfg.supervision.teacher_path)


if __name__ == "__main__":
    main()
