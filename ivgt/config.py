"""Configuration: the model's architecture (`ModelConfig`, stored in the checkpoint's config.json)
and the run (`TrainConfig`: data, losses, stages, optimiser). YAML files live in `configs/`.

`load_config(path, overrides)` reads a YAML file with the sections `model:` and `train:` and
applies command-line overrides `section.key=value` (or `key=value` where the key is unique).
A key that is not a field is an error naming it and the file, so a typo never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import config as common_config


@dataclass
class ModelConfig:
    # Image size fed to the backbone (H, W); multiples of patch_size. Inputs are resized to it.
    image_size: tuple = (64, 64)
    patch_size: int = 8
    # DINOv2-style patch embedding (a `transformers` Dinov2Model, or Dinov2WithRegistersModel when
    # encoder_registers > 0; VGGT's dinov2_vitl14_reg has 4); dinov2_path loads local weights.
    encoder_dim: int = 64
    encoder_layers: int = 2
    encoder_heads: int = 4
    encoder_registers: int = 0
    dinov2_path: str = ""
    # VGGT-1B's model.safetensors (a file, or a folder holding it): its aggregator (patch embedding,
    # camera / register tokens, frame / global blocks) initialises the backbone; the config must be
    # VGGT's (paper.yaml). Every key and shape is checked (ivgt/vggt_weights.py).
    vggt_path: str = ""
    # Alternating frame / global attention (VGGT aggregator).
    dim: int = 64
    depth: int = 2  # number of (frame, global) block pairs
    heads: int = 4
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    qk_norm: bool = False  # LayerNorm of each head's queries and keys in the blocks (VGGT: on)
    rope_freq: float = 0.0  # base frequency of the blocks' 2D rotary position embedding; 0: none (VGGT: 100)
    # Heads and the scene representation.
    camera_iters: int = 4
    head_stride: int = 4  # feature / depth maps at image_size / head_stride
    feature_dim: int = 32
    decoder_hidden: int = 64
    pe_freqs: int = 6
    density: str = "neus"  # "neus" (logistic) or "volsdf" (Laplace)
    init_variance: float = 0.3  # NeuS: s = exp(10 v); VolSDF: beta = exp(-10 v)
    visibility_margin: float = 0.05  # relative to the view's depth: tolerance of the occlusion test
    visibility_softness: float = 0.02
    truncation: float = 0.1  # the "raydepth" signal tanh((D - z) / truncation), normalised units
    # Rendering (hierarchical sampling).
    near: float = 0.05
    n_coarse: int = 24
    n_fine: int = 24
    up_sample_steps: int = 2


@dataclass
class TrainConfig:
    data_root: str = "data/synthetic"
    # Mixture over sources: name -> {"root", "split", "weight", "domain"} (synthetic indoor/outdoor).
    sources: dict = field(default_factory=lambda: {
        "indoor": {"root": "data/synthetic", "split": "train", "weight": 1.0, "domain": "indoor"},
        "outdoor": {"root": "data/synthetic", "split": "train", "weight": 1.0, "domain": "outdoor"},
    })
    input_views: int = 4
    target_views: int = 2  # extra views rendered for novel-view supervision
    rays_per_view: int = 64
    batch_size: int = 1  # scenes per step and process (N processes: N x this per step)
    steps: int = 400
    stage2_start: int = 200  # step at which stage 2 (eikonal term) begins
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    grad_clip: float = 1.0
    gt_camera_prob: float = 0.5  # probability of placing the features with ground-truth cameras
    w_rgb: float = 1.0
    w_depth: float = 1.0
    w_normal: float = 0.1
    w_eikonal: float = 0.1
    w_camera: float = 1.0
    w_depth_head: float = 1.0
    conf_alpha: float = 0.2
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    output_dir: str = "results/ivgt/run"
    num_workers: int = 0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path=None, overrides=()) -> Config:
    """Config from a YAML file (sections `model`, `train`) plus `key=value` overrides, checked."""
    cfg = common_config.load_config(Config, path, overrides)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Values of the right type that cannot work (`train.checkpoint_every=0` divides by zero after
    the first step), named by their dotted key before any work is done."""
    check_min = common_config.check_min
    check_min(cfg, ["train.steps", "train.batch_size", "train.checkpoint_every", "train.log_every",
                    "train.input_views", "train.rays_per_view", "model.patch_size", "model.head_stride",
                    "model.n_coarse"], 1)
    check_min(cfg, ["train.target_views", "train.warmup", "train.stage2_start", "train.num_workers",
                    "train.weight_decay", "train.gt_camera_prob", "train.conf_alpha",
                    "train.w_rgb", "train.w_depth", "train.w_normal", "train.w_eikonal", "train.w_camera",
                    "train.w_depth_head", "model.n_fine", "model.up_sample_steps"], 0)
    check_min(cfg, ["train.lr", "train.grad_clip", "model.near"], 0, strict=True)
    check_min(cfg, ["model.encoder_registers", "model.rope_freq"], 0)
    if cfg.model.vggt_path:
        if cfg.model.dinov2_path:
            raise common_config.ConfigError("model.dinov2_path and model.vggt_path: set one (VGGT's aggregator "
                                            "holds its own DINOv2 patch embedding)")
        from ivgt.vggt_weights import vggt_weights_file

        vggt_weights_file(cfg.model.vggt_path)  # one line naming a missing, pickled or unreadable file
    if cfg.train.gt_camera_prob > 1:
        raise common_config.ConfigError(f"train.gt_camera_prob: expected a probability in [0, 1], "
                                        f"got {cfg.train.gt_camera_prob!r}")
    size = cfg.model.image_size
    if len(size) != 2 or any(not isinstance(v, int) or v < 1 or v % cfg.model.patch_size for v in size):
        raise common_config.ConfigError(
            f"model.image_size: expected [H, W], multiples of model.patch_size ({cfg.model.patch_size}), "
            f"got {list(size)}"
        )
