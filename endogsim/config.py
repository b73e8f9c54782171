"""Configs of the 4DGS reconstruction (dataclasses; YAML in `endogsim/configs/`).

`ReconConfig` is the whole reconstruction run: the Gaussian model (`GaussianModelConfig`), the
initialisation from the first frame's depth, the losses and the optimiser. `Config` is the
top-level config a YAML file holds; it has one section per stage (`data`, `recon`) so that the
other stages (decomposition, refinement, simulation) can be added as further sections:

    cfg = load_config("endogsim/configs/tiny.yaml", ["recon.steps=50", "recon.seed=1"])
    model = train_reconstruction(cfg.recon, data_dir, out_dir)

A key with a typo, in the file or on the command line, is an error naming the key
(`common.config.load_config`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.config import ConfigError
from common.config import load_config as _load_config

__all__ = ["DataConfig", "GaussianModelConfig", "ReconConfig", "Config", "load_config", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"
LOOKS = ("blocks", "endoscopy")  # synthetic_scene.LOOKS (not imported: this module stays light)


@dataclass
class DataConfig:
    """The synthetic surgical clip (`endogsim.synthetic_scene.make_surgical_scene`) a run uses:
    look "endoscopy" (curved lobes, vessel texture, light at the camera, a shaft) or "blocks"."""

    seed: int = 0
    frames: int = 16
    height: int = 128
    width: int = 160
    look: str = "endoscopy"


@dataclass
class GaussianModelConfig:
    """`GaussianModel` settings other than the number of points (set by the depth initialisation)."""

    sh_degree: int = 1
    plane_resolution: tuple = (32, 32, 32, 16)  # x, y, z, t (EndoGaussian: 64, 64, 64, #frames-ish)
    multires: tuple = (1, 2)
    plane_features: int = 16
    mlp_width: int = 64
    mlp_depth: int = 1


@dataclass
class ReconConfig:
    """4DGS training from a monocular clip with tool masks and depth (EndoGaussian / Endo-4DGS recipe).

    Loss per step on one training frame (tissue pixels = not tool, as the anchors' `1 - mask`):
      w_l1 * L1(rgb) over tissue pixels
      + w_ssim * (1 - SSIM) of the two images with tool pixels zeroed (Endo-4DGS)
      + w_depth * L1(depth / max gt depth) over tissue pixels with valid depth (Endo-4DGS normalises
        by the frame's maximum depth so the weight does not depend on the depth units).
    The first `coarse_steps` steps fit the canonical Gaussians with the deformation off (the anchors'
    coarse stage); later steps train everything.
    """

    model: GaussianModelConfig = field(default_factory=GaussianModelConfig)
    depth_scale: float = 10000.0  # depth PNG value / depth_scale = depth (the synthetic clip's 0.1 mm)
    tool_is_white: bool = True  # EndoNeRF's mask polarity (StereoMIS conversions: False)
    init_stride: int = 2  # one Gaussian per stride-th pixel of frame 0
    init_opacity: float = 0.5
    steps: int = 1000
    coarse_steps: int = 150
    w_l1: float = 1.0
    w_ssim: float = 0.2  # 3DGS's lambda_dssim
    w_depth: float = 1.0
    # learning rates (3DGS / EndoGaussian groups); lr_means is in units of the scene's extent
    # (the diagonal of the model's bounding box: the initial points padded by 10%), as 3DGS scales position_lr
    lr_means: float = 1.6e-4
    lr_sh: float = 2.5e-3
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_grid: float = 1.6e-3
    lr_mlp: float = 1.6e-4
    lr_final_ratio: float = 0.01  # exponential decay of the position, grid and MLP rates to this fraction
    grad_clip: float = 1.0  # 0 turns clipping off
    checkpoint_every: int = 100
    seed: int = 0
    frames_per_step: int = 1  # training frames per step and process (N processes: N x this per step)


@dataclass
class Config:
    """A whole EndoGSim run; each stage is one section."""

    data: DataConfig = field(default_factory=DataConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)


def load_config(path=DEFAULT_CONFIG, overrides=()) -> Config:
    """`Config` from a YAML file and `key=value` overrides (dotted `recon.steps=5` or a unique `steps=5`)."""
    cfg = _load_config(Config, path, overrides)
    if cfg.data.look not in LOOKS:
        raise ConfigError(f"data.look: must be one of {LOOKS}, got {cfg.data.look!r}")
    check_recon_config(cfg.recon)
    return cfg


def check_recon_config(rc: ReconConfig) -> None:
    """Raise ConfigError naming the field whose value cannot work."""
    positive = {"init_stride": rc.init_stride, "steps": rc.steps, "checkpoint_every": rc.checkpoint_every,
                "frames_per_step": rc.frames_per_step,
                "depth_scale": rc.depth_scale}
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"recon.{name}: must be > 0, got {value!r}")
    if not 0 <= rc.coarse_steps <= rc.steps:
        raise ConfigError(f"recon.coarse_steps: must lie in [0, steps={rc.steps}], got {rc.coarse_steps}")
    if not 0 < rc.init_opacity < 1:
        raise ConfigError(f"recon.init_opacity: must lie in (0, 1), got {rc.init_opacity}")
    if rc.model.sh_degree not in (0, 1):
        raise ConfigError(f"recon.model.sh_degree: must be 0 or 1, got {rc.model.sh_degree}")
    if len(rc.model.plane_resolution) != 4:
        raise ConfigError("recon.model.plane_resolution: expected 4 values (x, y, z, t), "
                          f"got {rc.model.plane_resolution}")
    for name in ("w_l1", "w_ssim", "w_depth", "lr_final_ratio", "grad_clip"):
        if getattr(rc, name) < 0:
            raise ConfigError(f"recon.{name}: must be >= 0, got {getattr(rc, name)}")


def model_kwargs(rc: ReconConfig) -> dict:
    """Keyword arguments of `GaussianModel` / `GaussianModel.from_depth` from the config."""
    kw = asdict(rc.model)
    kw["plane_resolution"] = tuple(kw["plane_resolution"])
    kw["multires"] = tuple(kw["multires"])
    return kw
