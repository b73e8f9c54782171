"""Run configuration: plain dataclasses, read from YAML (`configs/tiny.yaml`, `configs/paper.yaml`) with
`key=value` overrides (`train.stage2.steps=300`). A key that names no field is an error naming it.

The ablations of `reproduce.py` are settings here: `model.geometry_bias` (geometry grounding),
`train.align_weight` (language alignment), `model.geometry_free` (the geometry-free VLM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import config as common_config


@dataclass
class ModelConfig:
    # paper.yaml: a local Qwen2 language model folder (config.json, safetensors, tokenizer). Empty: a
    # random-weight Qwen2 of the sizes below and a local byte-level tokenizer.
    pretrained_path: str = ""
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_mlp: int = 256
    tokenizer_vocab: int = 640
    vocab_size: int = 0  # 0: the tokenizer's size
    rope_theta: float = 10000.0
    init_std: float = 0.1  # transformers' 0.02 leaves tiny random LMs blind to the text (ide3d README)
    # Geometry encoder: per-pixel features at `image_size`, sampled every `pixel_stride` pixels, per-vertex
    # EdgeConv over a kNN graph, then voxel pooling at every size in `voxel_sizes` (metres).
    image_size: int = 64
    pixel_stride: int = 2
    geo_dim: int = 64
    knn: int = 8
    edgeconv_layers: int = 2
    voxel_sizes: list = field(default_factory=lambda: [0.25, 0.5, 1.0])
    max_tokens: int = 512  # per scale, the most populated voxels first
    # Fusion: cross-attention from language tokens to geometry tokens with the geometry-aware bias
    # (fusion.py); geometry_bias False = plain cross-attention (the "without geometry grounding" ablation).
    fusion_layers: int = 2
    fusion_heads: int = 4
    geometry_bias: bool = True
    bias_sigma: float = 1.0  # initial width of the bias, metres (learned per head)
    # The geometry-free VLM baseline: the same language model over RGB patch tokens (no depth, no 3D).
    geometry_free: bool = False
    # RGB-only reconstruction (Pi3 manner): patch tokens, alternating frame / global attention,
    # register tokens shared by all frames (no reference frame: permutation-equivariant).
    recon_patch: int = 8
    recon_dim: int = 64
    recon_layers: int = 4
    recon_heads: int = 4
    recon_registers: int = 5
    max_views: int = 8  # views whose camera frames the relational grounding reads
    dtype: str = "float32"


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    train_split: str = "train"
    test_split: str = "test"
    generate_scenes: dict = field(default_factory=lambda: {"train": 64, "test": 32})
    views: int = 4  # views per scene, uniformly over the scan
    max_scenes: int = 0
    # Sensor depth as a depth camera gives it: holes (a fraction of pixels and the far range) and
    # relative noise; the reconstruction head completes and denoises it.
    sensor_dropout: float = 0.3
    sensor_noise: float = 0.02
    sensor_max_depth: float = 12.0
    # Candidate boxes: the objects' axis-aligned boxes jittered, plus random floor boxes (ide3d's scheme).
    jitter: float = 0.08
    distractors: int = 4
    qa_types: list = field(default_factory=lambda: ["closer", "left_of", "count", "size", "distance"])
    # 7-Scenes evaluation (reconstruction only): the dataset root and the keyframe stride (official 200 / 40).
    seven_scenes_root: str = ""
    seven_scenes_stride: int = 200


@dataclass
class StageConfig:
    steps: int = 100
    lr: float = 1.0e-3
    warmup: float = 0.03
    scenes_per_batch: int = 2
    queries_per_scene: int = 8


@dataclass
class TrainConfig:
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=600, queries_per_scene=1))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=1200))
    # L = L_depth + L_normal + L_smooth + L_recon + L_align + L_spatial + L_text (+ grounding), weights:
    depth_weight: float = 1.0
    normal_weight: float = 0.5
    smooth_weight: float = 0.1
    recon_weight: float = 1.0  # Pi3's point + camera loss of the RGB-only network
    camera_weight: float = 0.2  # G2VLM's weight of Pi3's camera term inside L_recon
    align_weight: float = 1.0
    ground_weight: float = 1.0
    spatial_weight: float = 1.0
    text_weight: float = 1.0
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    out_dir: str = "results/g2vlm/run"
    seed: int = 0


@dataclass
class EvalConfig:
    tsdf_voxel: float = 0.05  # TSDF fusion voxel (indoor; outdoor scenes use 4x)
    fscore_threshold: float = 0.05
    occupancy_voxel: float = 0.1
    icp_threshold: float = 0.1  # the official protocol's 0.1 m
    relation_threshold: float = 0.5
    max_new_tokens: int = 8
    batch_size: int = 16
    bootstrap: int = 2000


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path=None, overrides=()) -> Config:
    cfg = common_config.load_config(Config, path, overrides)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Values of the right type that cannot work, named before any work is done."""

    def bad(key, expected, value):
        raise common_config.ConfigError(f"{key}: expected {expected}, got {value!r}")

    m, d = cfg.model, cfg.data
    if len(m.voxel_sizes) < 3 or any(v <= 0 for v in m.voxel_sizes):
        bad("model.voxel_sizes", "at least three sizes > 0 (multi-scale pooling)", m.voxel_sizes)
    if m.knn < 2:
        bad("model.knn", ">= 2", m.knn)
    if m.image_size % m.recon_patch:
        bad("model.image_size", f"a multiple of model.recon_patch ({m.recon_patch})", m.image_size)
    if d.views < 2:
        bad("data.views", ">= 2 (multi-view reconstruction)", d.views)
    if not 0 <= d.sensor_dropout < 1:
        bad("data.sensor_dropout", "in [0, 1)", d.sensor_dropout)
    check_min = common_config.check_min
    stages = ("train.stage1", "train.stage2")
    check_min(cfg, [f"{s}.{k}" for s in stages for k in ("scenes_per_batch", "queries_per_scene")]
              + ["train.checkpoint_every", "eval.max_new_tokens", "eval.batch_size"], 1)
    weights = ("depth", "normal", "smooth", "recon", "camera", "align", "ground", "spatial", "text")
    check_min(cfg, [f"{s}.{k}" for s in stages for k in ("steps", "warmup")]
              + [f"train.{w}_weight" for w in weights] + ["train.grad_clip", "data.max_scenes"], 0)
    check_min(cfg, [f"{s}.lr" for s in stages], 0, strict=True)


def to_dict(cfg: Config) -> dict:
    return common_config.config_to_dict(cfg)
