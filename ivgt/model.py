"""IVGT (arXiv 2605.16258): unposed images -> a VGGT-style transformer -> cameras, per-view depth
and feature maps placed in the first frame's coordinates -> a continuous SDF + colour field.

    model = IVGT.from_config(ModelConfig())          # or IVGT.load(checkpoint_dir)
    scene = model.reconstruct(images)                 # images [V, 3, H, W] in [0, 1], any H, W
    scene.sdf(points), scene.color(points)            # points [N, 3], first-camera frame
    out = scene.render(K, w2c, H, W)                  # rgb [3, H, W], depth [H, W], normals [3, H, W]
    mesh = scene.extract_mesh(resolution=128)         # coloured trimesh.Trimesh

Coordinates: the world is the first view's OpenCV camera frame (w2c[0] = identity), in the
model's normalised units (training normalises every scene so that the mean distance of its
valid depth points from the first camera is 1; VGGT's normalisation).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin

from common.cameras import (camera_centers, fov_from_intrinsics, intrinsics_from_fov, invert_pose, matrix_to_quaternion,
                            quaternion_to_matrix, resize_intrinsics)
from common.checkpoint import check_weights_folder, load_safetensors
from ivgt.aggregator import Aggregator, Block
from ivgt.config import ModelConfig
from ivgt.scene import Scene, images_at, positional_encoding, sample_views  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------------------------
# Pose encoding (VGGT `absT_quaR_FoV`): [t (3), quaternion wxyz (4), fov_h, fov_w] of w2c
# ----------------------------------------------------------------------------------------------


def pose_encoding(w2c: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., 9] from w2c [..., 4, 4] and K [..., 3, 3] of an image (height, width)."""
    fov_w, fov_h = fov_from_intrinsics(K, width, height)
    q = matrix_to_quaternion(w2c[..., :3, :3])  # [..., 4]
    return torch.cat([w2c[..., :3, 3], q, fov_h[..., None], fov_w[..., None]], -1)


def cameras_from_encoding(enc: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K [..., 3, 3], w2c [..., 4, 4]) from encodings [..., 9]; principal point at the centre."""
    R = quaternion_to_matrix(enc[..., 3:7])  # [..., 3, 3]
    w2c = torch.zeros(*enc.shape[:-1], 4, 4, dtype=enc.dtype, device=enc.device)
    w2c[..., :3, :3] = R
    w2c[..., :3, 3] = enc[..., :3]
    w2c[..., 3, 3] = 1
    K = intrinsics_from_fov(enc[..., 8], enc[..., 7], width, height)
    return K, w2c


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class CameraHead(nn.Module):
    """VGGT camera head: the camera tokens, a trunk of attention blocks over the views modulated
    (adaLN) by the embedding of the current estimate, `iters` refinements of the pose encoding."""

    def __init__(self, dim: int, heads: int, iters: int):
        super().__init__()
        self.iters = iters
        self.norm = nn.LayerNorm(dim)
        self.embed_pose = nn.Linear(9, dim)
        self.empty = nn.Parameter(torch.zeros(1, 1, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.trunk = nn.Sequential(Block(dim, heads), Block(dim, heads))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 9))

    @staticmethod
    def activate(raw: torch.Tensor) -> torch.Tensor:
        """Raw [B, V, 9] -> encoding with a unit quaternion and positive FoV; the first view is the
        identity pose (the canonical frame), only its FoV is predicted."""
        t, q = raw[..., :3], F.normalize(raw[..., 3:7], dim=-1)
        fov = F.softplus(raw[..., 7:9] + 0.5) + 1e-3
        t = torch.cat([torch.zeros_like(t[:, :1]), t[:, 1:]], 1)
        q = torch.cat([q.new_tensor([1.0, 0, 0, 0]).expand_as(q[:, :1]), q[:, 1:]], 1)
        return torch.cat([t, q, fov], -1)

    def forward(self, camera_tokens: torch.Tensor) -> list[torch.Tensor]:
        """camera_tokens [B, V, C] -> list of `iters` activated encodings [B, V, 9]."""
        tokens = self.norm(camera_tokens)
        raw, out = None, []
        for _ in range(self.iters):
            cond = self.empty.expand_as(tokens) if raw is None else self.embed_pose(raw.detach())
            shift, scale, gate = self.modulation(cond).chunk(3, -1)
            x = tokens + gate * (tokens * (1 + scale) + shift)
            delta = self.out(self.trunk(x))  # [B, V, 9]
            raw = delta if raw is None else raw.detach() + delta
            out.append(self.activate(raw))
        return out


class DenseHead(nn.Module):
    """Patch tokens -> a dense map at image / stride: a linear unpatchify (pixel shuffle), then two
    convolutions that also see the image at that resolution (a light stand-in for VGGT's DPT)."""

    def __init__(self, dim_in: int, patch: int, stride: int, out_channels: int, hidden: int = 64):
        super().__init__()
        self.up = patch // stride
        self.linear = nn.Linear(dim_in, hidden * self.up**2)
        self.conv = nn.Sequential(nn.Conv2d(hidden + 3, hidden, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(hidden, out_channels, 3, padding=1))

    def forward(self, tokens: torch.Tensor, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """tokens [N, P, C], images [N, 3, H, W] -> [N, out, h * up, w * up]."""
        h, w = grid
        x = self.linear(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # [N, hidden*up^2, h, w]
        x = F.pixel_shuffle(x, self.up)  # [N, hidden, h*up, w*up]
        small = F.interpolate(images, size=x.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        return self.conv(torch.cat([x, small], 1))


class SceneDecoder(nn.Module):
    """Query -> SDF and colour (IVGT's "lightweight cascaded decoders"): a shared per-view MLP on
    [sampled feature, sampled colour, raydepth signal], visibility-weighted mean and variance over
    views (IBRNet-style), plus a positional encoding -> SDF MLP -> colour MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.decoder_hidden
        self.per_view = nn.Sequential(nn.Linear(cfg.feature_dim + 4, h), nn.GELU(), nn.Linear(h, h))
        pe_dim = 3 + 6 * cfg.pe_freqs
        self.sdf_mlp = nn.Sequential(nn.Linear(2 * h + 2 + pe_dim, h), nn.Softplus(beta=100), nn.Linear(h, h),
                                     nn.Softplus(beta=100), nn.Linear(h, 1 + h))
        self.color_mlp = nn.Sequential(nn.Linear(h + 3, h), nn.GELU(), nn.Linear(h, 3))
        self.variance = nn.Parameter(torch.tensor(cfg.init_variance))  # NeuS s = exp(10 v)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class IVGT(ModelMixin, ConfigMixin):
    """The IVGT model (see the module docstring). Constructor arguments are `ModelConfig` fields."""

    config_name = "config.json"

    def __init__(self, **kwargs):
        super().__init__()
        known = {f.name for f in fields(ModelConfig)}
        for key in kwargs:
            if key not in known:
                raise ValueError(f"IVGT: unknown config key {key!r}; expected one of {sorted(known)}")
        cfg = ModelConfig(**{k: (tuple(v) if k == "image_size" else v) for k, v in kwargs.items()})
        for side in cfg.image_size:
            if side % cfg.patch_size:
                raise ValueError(f"image_size: {cfg.image_size} must be multiples of patch_size {cfg.patch_size}")
        if cfg.density not in ("neus", "volsdf"):
            raise ValueError(f"density: expected 'neus' or 'volsdf', got {cfg.density!r}")
        self.cfg = cfg
        # Every field goes to config.json (register_to_config does not record **kwargs itself).
        self.register_to_config(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()})
        self.aggregator = Aggregator(cfg)
        dim2 = 2 * cfg.dim
        self.camera_head = CameraHead(dim2, cfg.heads, cfg.camera_iters)
        self.depth_head = DenseHead(dim2, cfg.patch_size, cfg.head_stride, 2)
        self.feature_head = DenseHead(dim2, cfg.patch_size, cfg.head_stride, cfg.feature_dim)
        self.decoder = SceneDecoder(cfg)
        if cfg.dinov2_path and cfg.vggt_path:
            raise ValueError("dinov2_path and vggt_path: set one (VGGT's aggregator holds its own DINOv2)")
        if cfg.dinov2_path:
            self.load_dinov2(cfg.dinov2_path)
        if cfg.vggt_path:
            self.load_vggt(cfg.vggt_path)

    @classmethod
    def from_model_config(cls, cfg: ModelConfig) -> "IVGT":
        return cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()})

    def load_dinov2(self, path) -> None:
        """Copy a local `transformers` Dinov2Model checkpoint (Dinov2WithRegistersModel where
        encoder_registers > 0) into the patch embedding; every key and shape must match the
        configured encoder (encoder_dim, encoder_layers, patch_size, encoder_registers)."""
        check_weights_folder(path)  # one line naming the folder: no safetensors, a truncated file
        encoder_class = type(self.aggregator.encoder)
        source = encoder_class.from_pretrained(path, local_files_only=True, use_safetensors=True).state_dict()
        target = self.aggregator.encoder.state_dict()
        missing, extra = set(target) - set(source), set(source) - set(target)
        if missing or extra:
            raise ValueError(f"{path}: DINOv2 checkpoint does not match the encoder config: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
        for key, value in source.items():
            if value.shape != target[key].shape:
                raise ValueError(f"{path}: {key} has shape {list(value.shape)}, the config expects {list(target[key].shape)}")
        self.aggregator.encoder.load_state_dict(source)

    def load_vggt(self, path) -> dict:
        """Initialise the backbone from VGGT-1B's aggregator (`model.safetensors` or its folder):
        every key and shape checked, one line on stderr saying what was loaded and what was not
        (`ivgt/vggt_weights.py` has the key map). Returns the report."""
        import sys

        from ivgt.vggt_weights import load_vggt_aggregator, report_line

        report = load_vggt_aggregator(self, path)
        print(f"ivgt: {report_line(report)}", file=sys.stderr)
        return report

    @classmethod
    def load(cls, path) -> "IVGT":
        """Load a checkpoint folder written by `save_pretrained`, with clear errors for a folder of
        another architecture (its config.json class or weights do not match)."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: not found; expected an IVGT checkpoint folder")
        meta = json.loads(config_file.read_text())
        if meta.get("_class_name") != cls.__name__:
            raise ValueError(f"{config_file}: checkpoint of class {meta.get('_class_name')!r}, expected 'IVGT'")
        kwargs = {k: v for k, v in meta.items() if not k.startswith("_")}
        kwargs["dinov2_path"] = kwargs["vggt_path"] = ""  # the weights come from the checkpoint itself
        weights = path / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            check_weights_folder(path)  # names pickled weights (.bin) found instead
            raise FileNotFoundError(f"{weights}: not found")
        state = load_safetensors(weights)  # CheckpointError naming a truncated or pickled file
        model = cls(**kwargs)
        own = model.state_dict()
        bad = [k for k in state if k in own and state[k].shape != own[k].shape]
        missing, extra = set(own) - set(state), set(state) - set(own)
        if bad or missing or extra:
            raise ValueError(f"{weights}: weights do not match the IVGT architecture of {config_file} "
                             f"(shape mismatch {bad[:3]}, missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})")
        model.load_state_dict(state)
        return model.eval()

    # -- forward ------------------------------------------------------------------------------

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Backbone input size for images (height, width): the configured width, the height
        scaled to keep the aspect ratio, rounded to the patch size, at most the configured height
        (VGGT's `load_and_preprocess_images`, "crop"-free)."""
        H_max, W = self.cfg.image_size
        p = self.cfg.patch_size
        H = max(p, min(H_max, int(round(height * W / width / p)) * p))
        if H == H_max and height * W / width > H_max:  # tall images: fix the height instead
            W = max(p, int(round(width * H_max / height / p)) * p)
        return H, W

    def forward(self, images: torch.Tensor) -> dict:
        """images [B, V, 3, H, W] in [0, 1] (H, W multiples of patch_size) -> dict with
        pose_enc_list (list of [B, V, 9]), pose_enc [B, V, 9], K [B, V, 3, 3], w2c [B, V, 4, 4],
        depth [B, V, h, w], depth_conf [B, V, h, w], features [B, V, C, h, w] (h, w = H, W / stride)."""
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images: expected [B, V, 3, H, W], got {list(images.shape)}")
        B, V, _, H, W = images.shape
        p = self.cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"images: H, W = {H}, {W} must be multiples of patch_size {p}; use reconstruct()")
        tokens = self.aggregator(images)  # [B, V, T, 2C]
        start = self.aggregator.patch_start
        poses = self.camera_head(tokens[:, :, 0])  # list of [B, V, 9]
        patch_tokens = tokens[:, :, start:].flatten(0, 1)  # [B*V, P, 2C]
        flat = images.flatten(0, 1)  # [B*V, 3, H, W]
        dc = self.depth_head(patch_tokens, flat, (H // p, W // p))  # [B*V, 2, h, w]
        feats = self.feature_head(patch_tokens, flat, (H // p, W // p))  # [B*V, C, h, w]
        K, w2c = cameras_from_encoding(poses[-1], H, W)
        h, w = dc.shape[-2:]
        return {
            "pose_enc_list": poses, "pose_enc": poses[-1], "K": K, "w2c": w2c,
            "depth": dc[:, 0].exp().reshape(B, V, h, w),  # VGGT "exp" activation
            "depth_conf": (1 + dc[:, 1].exp()).reshape(B, V, h, w),  # "expp1"
            "features": feats.reshape(B, V, -1, h, w),
        }

    def scene_from_outputs(self, images: torch.Tensor, out: dict, b: int = 0, K=None, w2c=None) -> "Scene":
        """The scene of batch item b; K, w2c [V, ...] override the predicted cameras (training
        with ground-truth placement)."""
        return Scene(self, images[b], out["features"][b], out["depth"][b],
                     out["K"][b] if K is None else K, out["w2c"][b] if w2c is None else w2c)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, K: torch.Tensor | None = None,
                    w2c: torch.Tensor | None = None) -> "Scene":
        """images [V, 3, H, W] in [0, 1], any size -> Scene. The images are resized to the
        backbone's input size; `scene.cameras` gives K for the original size.

        Known cameras replace the predicted ones: K [V, 3, 3] in pixels of `images`; w2c [V, 4, 4]
        in any unit (COLMAP's, metres), re-expressed with the first camera as the world and scaled
        to the predicted cameras' mean distance from it; `scene.units_per_given` holds that scale
        (model units per given unit; 1 without w2c or with a single view)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [V, 3, H, W], got {list(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images: contains NaN or inf")
        H0, W0 = images.shape[-2:]
        H, W = self.input_size(H0, W0)
        device = next(self.parameters()).device
        x = images.to(device).float()
        if (H, W) != (H0, W0):
            x = F.interpolate(x, size=(H, W), mode="bilinear", antialias=True, align_corners=False)
        out = self(x[None])
        if K is not None:
            K = resize_intrinsics(K.to(device).float(), (H0, W0), (H, W))  # [V, 3, 3]
        scale = torch.tensor(1.0, device=device)
        if w2c is not None:
            w2c = w2c.to(device).float() @ invert_pose(w2c[0].to(device).float())  # [V, 4, 4], first = I
            given = camera_centers(w2c).norm(dim=-1).mean()
            predicted = camera_centers(out["w2c"][0]).norm(dim=-1).mean()
            if given > 1e-9:
                scale = predicted / given
            w2c = torch.cat([w2c[:, :3, :3], w2c[:, :3, 3:] * scale], -1)
            w2c = torch.cat([w2c, out["w2c"][0, :, 3:]], 1)  # [V, 4, 4] with the row [0, 0, 0, 1]
        scene = self.scene_from_outputs(x[None], out, K=K, w2c=w2c)
        scene.original_size = (H0, W0)
        scene.units_per_given = float(scale)
        return scene
