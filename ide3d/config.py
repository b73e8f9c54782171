"""Run configuration: plain dataclasses, read from YAML (`configs/tiny.yaml`, `configs/paper.yaml`)
with `key=value` overrides on the command line (`train.steps=200`, `supervision.global_weight=0`).

A YAML key or override that names no field is an error naming the key (`common.config`).

The paper's knobs are here; which ablation a run is (baseline, + global, ..., full) is nothing but
the three loss weights and the verifier's initialisation (`VARIANTS` in `reproduce.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import config as common_config


@dataclass
class ModelConfig:
    # paper.yaml: a local LLaVA-Video-7B-Qwen2 folder in transformers' LLaVA-OneVision format
    # (config.json, safetensors, tokenizer). Empty: a random-weight model of the sizes below and a
    # local byte-level tokenizer.
    pretrained_path: str = ""
    # SigLIP vision tower (LLaVA-Video: so400m, 384 px, patch 14, 26 layers after dropping the last).
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 4
    vision_heads: int = 2
    vision_mlp: int = 128
    # Qwen2 language model (LLaVA-Video-7B: Qwen2-7B).
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_mlp: int = 256
    tokenizer_vocab: int = 640  # the local tokenizer's size (random-weight models)
    vocab_size: int = 0  # the embedding's rows; 0: the tokenizer's size (paper: Qwen2's 152064)
    rope_theta: float = 1000000.0  # Qwen2-7B's
    # Std of the random initialisation (transformers' default 0.02). Random-weight models only.
    init_std: float = 0.02
    # Grounding (Video-3D LLM): InfoNCE temperature, and the sin-cos 3D encoding of box centres
    # (and, for the 3D-input variant, of each visual token's mean world point): coordinates are
    # clamped to [pe_min, pe_max] metres and voxelised at pe_voxel before the encoding.
    ground_temperature: float = 0.07
    pe_min: list = field(default_factory=lambda: [-40.0, -40.0, -5.0])
    pe_max: list = field(default_factory=lambda: [40.0, 40.0, 15.0])
    pe_voxel: float = 0.1
    pe_scale: float = 1.0  # the encoding's factor (1: Video-3D LLM's unit sin / cos values)
    # Video-3D LLM's 3D inputs: the encoding of each token's mean world point is added to the
    # visual tokens (needs depth and poses at inference). False for 3D-IDE and its ablations.
    token_pe: bool = False
    dtype: str = "float32"


@dataclass
class SupervisionConfig:
    """Training-only pressure on the encoder (Sec. 3); weight 0 turns a term off."""

    geometry_weight: float = 0.8  # official `depth.weight`; 0 = no verifier
    cross_view_weight: float = 0.1  # on the verifier's depths; needs geometry_weight > 0
    global_weight: float = 1.0  # 1 - cos to the frozen 3D teacher
    cross_view_range: int = 2  # the neighbour frame is drawn from t-2 .. t+2 (not t)
    # Weak verifier: a DPT decoder from scratch on four SigLIP layers (official 6/12/18/last) through
    # an MLP projector (official 1152 -> 2304 -> 2048, DPT features 256, out [256, 512, 1024, 1024]).
    verifier_layers: list = field(default_factory=lambda: [1, 2, 3, 4])
    verifier_dim: int = 64
    verifier_features: int = 32
    verifier_channels: list = field(default_factory=lambda: [16, 32, 64, 64])
    # Strong verifier: a folder written by `ide3d.train.pretrain_verifier` (the same decoder
    # trained to convergence on the synthetic train split); empty = weak (random initialisation).
    verifier_init: str = ""
    conf_alpha: float = 0.2  # - alpha * log(conf)
    grad_scales: int = 4  # multi-scale gradient term
    quantile: float = 0.98  # residuals above this quantile are dropped (official `valid_range`)
    # The frozen 3D teacher: "builtin" (ide3d.teacher.GeometryTeacher trained on the train split
    # by `make reproduce-ide3d`, read from teacher_path), a local GeometryTeacher folder, or a
    # `module:callable` returning an object with `features(frames, K, w2c) -> [F, h, w, C]`.
    teacher: str = "builtin"
    teacher_path: str = "results/ide3d/teacher"


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # common scene format; generated when absent
    train_split: str = "train"
    test_split: str = "test"
    generate_scenes: dict = field(default_factory=lambda: {"train": 64, "test": 32})
    # "synthetic": common.synthetic scenes; "scannet": ScanNet frames + ScanRefer / Multi3DRefer /
    # ScanQA / SQA3D and Video-3D LLM's box JSON; "video3dllm": Video-3D LLM's llava-style records.
    source: str = "synthetic"
    frames: int = 8  # sampled uniformly over the scene's views (paper: 32)
    max_scenes: int = 0  # 0: all
    # Candidate boxes on synthetic scenes: every object's axis-aligned box, jittered (centre by
    # N(0, jitter * size), size by a factor exp(N(0, jitter))), plus `distractors` random boxes.
    jitter: float = 0.08
    distractors: int = 4
    zero_target: int = 1  # zero-target expressions per scene ("all purple objects" where none is)
    qa_types: list = field(default_factory=lambda: ["closer", "left_of", "count", "size", "distance"])
    # Real data (source scannet / video3dllm): folders and files in their public layouts.
    scannet_root: str = ""
    scanrefer: str = ""
    multi3drefer: str = ""
    scanqa: str = ""
    sqa3d_questions: str = ""
    sqa3d_annotations: str = ""
    records: str = ""  # Video-3D LLM *_llava_style.json
    boxes: str = ""  # Video-3D LLM scannet_{train_gt,val_pred}_box.json
    gt_boxes: str = ""  # the GT box JSON, to score predictions made on proposals


@dataclass
class TeacherConfig:
    """The default 3D teacher: a small multi-view geometry network (depth + relative pose)."""

    dim: int = 64
    layers: int = 4
    heads: int = 4
    patch_size: int = 8
    image_size: int = 64
    steps: int = 600
    batch_size: int = 4
    lr: float = 1.0e-3


@dataclass
class TrainConfig:
    steps: int = 1600
    # Per process and step: scenes, and queries of each (the video encoder and the training-only
    # losses run once per scene). N processes follow the loss curve of one with N x the scenes.
    scenes_per_batch: int = 2
    queries_per_scene: int = 16
    lr: float = 1.0e-3
    vision_lr: float = 2.0e-4  # official: 2e-6 for the vision tower and the verifier, 1e-5 for the rest
    warmup: float = 0.03
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    verifier_steps: int = 600  # pre-training of the strong verifier (ablation only)
    out_dir: str = "results/ide3d/run"
    seed: int = 0


@dataclass
class EvalConfig:
    max_new_tokens: int = 8
    batch_size: int = 16
    multi_threshold: float = 0.4  # Multi3DRefer set: top candidates until this much probability
    probe_scenes: int = 32  # training scenes for the linear depth probe
    bootstrap: int = 2000


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path=None, overrides=()) -> Config:
    """Config from a YAML file (or the defaults) with `key=value` overrides applied in order."""
    cfg = common_config.load_config(Config, path, overrides)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Values that are of the right type but cannot work, named before any work is done."""
    s = cfg.supervision

    def bad(key, expected, value):
        raise common_config.ConfigError(f"{key}: expected {expected}, got {value!r}")

    for key in ("geometry_weight", "cross_view_weight", "global_weight"):
        if getattr(s, key) < 0:
            bad(f"supervision.{key}", ">= 0", getattr(s, key))
    if s.cross_view_weight > 0 and s.geometry_weight == 0:
        bad(
            "supervision.cross_view_weight",
            "0 when geometry_weight is 0 (it acts on the verifier's depths)",
            s.cross_view_weight,
        )
    if len(s.verifier_layers) != 4 or len(s.verifier_channels) != 4:
        bad(
            "supervision.verifier_layers / verifier_channels",
            "4 entries each (DPT reads four levels)",
            [s.verifier_layers, s.verifier_channels],
        )
    check_min = common_config.check_min
    check_min(cfg, ["supervision.cross_view_range", "supervision.grad_scales", "teacher.batch_size",
                    "eval.max_new_tokens", "eval.batch_size", "train.steps", "train.scenes_per_batch",
                    "train.queries_per_scene", "train.checkpoint_every"], 1)
    check_min(cfg, ["train.warmup", "train.weight_decay", "train.grad_clip", "train.verifier_steps",
                    "teacher.steps", "data.max_scenes", "data.distractors", "data.jitter"], 0)
    check_min(cfg, ["supervision.conf_alpha"], 0)
    check_min(cfg, ["train.lr", "train.vision_lr", "teacher.lr"], 0, strict=True)
    if cfg.data.source not in ("synthetic", "scannet", "video3dllm"):
        bad("data.source", "'synthetic', 'scannet' or 'video3dllm'", cfg.data.source)
    if cfg.data.frames < 2:
        bad("data.frames", ">= 2 (cross-view and the video need several frames)", cfg.data.frames)
    if cfg.model.image_size < cfg.model.patch_size:
        bad("model.image_size", f">= patch_size ({cfg.model.patch_size})", cfg.model.image_size)


def to_dict(cfg: Config) -> dict:
    return common_config.config_to_dict(cfg)
