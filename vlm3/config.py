"""Configuration: plain dataclasses, YAML files in configs/, `key=value` overrides on the command line.

`load_config("vlm3/configs/tiny.yaml", ["train.steps=200", "data.unify_focal=false"])`. A YAML key or
an override that names no field is a ValueError naming the key and the fields that exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common import config as common_config

# Experiment settings that are not the paper's: they left the product for vlm3.diagnostics. Each:
# (its command there, the tasks whose training questions it changed; in a run that asked none of
# them, or at 0, it changed nothing, and `vlm3.reproduce.finished_checkpoint` reuses such a run).
MOVED = {
    "data.corr_same_view": ("python -m vlm3.diagnostics.rendered --copy-lessons P", ("correspondence",)),
    "data.corr_shift": ("python -m vlm3.diagnostics.rendered --corr-shift N", ("correspondence",)),
    "data.turn_pairs": ("python -m vlm3.diagnostics.rendered --turn-pairs P", ("correspondence", "pose")),
}


@dataclass
class ModelConfig:
    # paper.yaml: a local folder holding Qwen3-VL-4B-Instruct (config.json, safetensors, tokenizer,
    # preprocessor_config.json). None: build a random-weight Qwen3-VL of the sizes below.
    pretrained_path: str | None = None
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 32
    text_intermediate: int = 256
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 2
    vision_intermediate: int = 128
    # M-RoPE base of the text model. Qwen3-VL-4B: 5e6 over 64 rotary frequencies (head_dim 128); a tiny
    # head_dim of 32 has 16, and a base of 100 gives them the 4B's highest image-row/column
    # frequencies (about 0.75 and 0.56 rad per patch; 10000 would give 0.56 and 0.32).
    rope_theta: float = 10000.0
    # Std of the vision tower's learned position table at initialisation (None: transformers' default,
    # N(0, 0.02), 20x weaker than the patch features). Random-weight models only (tiny.yaml: 0.5).
    vision_pos_init_std: float | None = None
    # Two-image questions (correspondence, pose) as one 2-frame video: Qwen3-VL's temporal patch
    # holds both views of a cell in one token (diagnostics/DIAGNOSTICS.md); False: two images, as the paper.
    pair_as_video: bool = False
    patch_size: int = 16  # Qwen3-VL: 16 px patches, 2x2 merged -> one LLM token per 32x32 px
    merge_size: int = 2
    min_pixels: int = 64 * 64  # image processor bounds (the processor resizes to multiples of 32)
    max_pixels: int = 160 * 160
    tokenizer_vocab: int = 512  # tiny tokenizer: byte-level BPE trained on the prompt templates
    dtype: str = "float32"  # paper: bfloat16 on GPU


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    train_split: str = "train"
    test_split: str = "test"
    # The held-out split from another root (None: `root`): the long profile scores pose on a test split
    # of 160 scenes, whose first 32 are the benchmark's (same generator, seed and split name).
    test_root: str | None = None
    # When the split folders are absent they are generated (make data's settings).
    generate_scenes: dict = field(default_factory=lambda: {"train": 64, "test": 32})
    views: int = 8
    size: int = 128
    max_train_scenes: int | None = None
    focal_depth: float = 1000.0  # canonical focal length for depth, correspondence and objects (px)
    focal_pose: float = 750.0  # for pose (VLM3's "f750")
    unify_focal: bool = True
    zoom: list = field(default_factory=lambda: [1.0, 1.6])  # per-scene zoom: varied focal lengths
    depth_target: str = "distance"  # VLM3/DepthLM: ray distance ("how far ... from the camera"); or "z"
    depth_max_points: int = 1  # depth prompts ask about 1..N points (N > 1: multi-point answers)
    think: bool = False  # DepthLM's templated <think> before <answer> in depth answers
    min_object_pixels: int = 150  # objects smaller than this in a view get no questions
    # Training correspondence questions ask about 1..N pixels of the first image (VLM3 Table 4: 10
    # pixels per sample); held-out questions ask about one.
    corr_max_points: int = 1
    # Questions per training sample, per task (default 1): a sample is a multi-turn conversation of up
    # to that many questions on the same images (VLM3 Table 4: 10 pixels per depth / correspondence
    # sample). The images are encoded once for all of them. Held-out questions are single-turn.
    turns: dict = field(default_factory=dict)
    marker: bool = False  # ablation: DepthLM's red arrow drawn in the image instead of text coordinates
    mixture: dict = field(
        default_factory=lambda: {"depth": 1.0, "correspondence": 1.0, "pose": 1.0, "object": 1.0}
    )
    samples: dict = field(
        default_factory=lambda: {"depth": 20000, "correspondence": 20000, "pose": 20000, "object": 20000}
    )  # distinct questions per task


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    out_dir: str = "results/vlm3/run"
    seed: int = 0
    # Processes that build the training questions (0: the training loop itself). Questions are pure
    # functions of their index, so the batches are the same either way; a GPU run needs them.
    workers: int = 0


@dataclass
class EvalConfig:
    depth: int = 128  # questions per task on the test split
    correspondence: int = 96
    pose_pairs: int = 64  # each pair is asked all four pose questions
    object: int = 128
    batch_size: int = 32
    max_new_tokens: int = 40
    seed: int = 1234


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path=None, overrides=()) -> Config:
    """Defaults, then the YAML file at `path`, then `key=value` overrides (values parsed as YAML);
    then `check_config`. A key in `MOVED` is one line saying where it went."""
    _check_moved(path, overrides)
    cfg = common_config.load_config(Config, path, overrides)
    check_config(cfg)
    return cfg


def load_profile(path, overrides=()) -> dict[str, Config]:
    """{run name: Config} of a profile file (configs/long.yaml): `base`, a config file beside it, and
    `runs`, each a mapping of dotted keys to the values that run changes; then `overrides` for every
    run. Errors name the file and the run."""
    path = Path(path)
    if not path.is_file():
        raise common_config.ConfigError(f"{path}: profile file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise common_config.ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not (isinstance(data, dict) and isinstance(data.get("base"), str) and isinstance(data.get("runs"), dict)
            and data["runs"] and all(isinstance(r, dict) for r in data["runs"].values())):
        raise common_config.ConfigError(
            f"{path}: expected 'base' (a config file beside it) and 'runs' (run name: {{dotted key: value}})"
        )
    runs = {}
    for name, changes in data["runs"].items():
        own = [f"{k}={json.dumps(v)}" for k, v in changes.items()]  # JSON is YAML: values stay typed
        try:
            runs[str(name)] = load_config(path.parent / data["base"], own + list(overrides))
        except common_config.ConfigError as exc:
            raise common_config.ConfigError(f"{path}: runs.{name}: {exc}") from None
    return runs


def _check_moved(path, overrides) -> None:
    found = []  # (where, dotted key)
    if path is not None and Path(path).is_file():
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError:
            data = None  # common.config names the file
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            found += [(str(path), f"data.{k}") for k in data["data"]]
    for item in overrides:
        key = str(item).partition("=")[0].strip()
        found.append((f"override {item!r}", key if "." in key else f"data.{key}"))
    for where, key in found:
        if key in MOVED:
            raise common_config.ConfigError(
                f"{where}: {key!r} is no longer a config setting (an experiment, not the paper's); "
                f"it moved to vlm3.diagnostics: {MOVED[key][0]}"
            )


def check_config(cfg: Config) -> None:
    """Values of the right type that cannot work (`train.checkpoint_every=0` divides by zero after
    the first step), named by their dotted key before any work is done."""
    check_min = common_config.check_min
    check_min(cfg, ["train.steps", "train.batch_size", "train.checkpoint_every", "eval.batch_size",
                    "eval.max_new_tokens", "data.views", "data.size", "data.depth_max_points",
                    "data.corr_max_points", "model.patch_size", "model.merge_size"], 1)
    check_min(cfg, ["train.warmup", "train.weight_decay", "train.grad_clip", "train.workers",
                    "eval.depth", "eval.correspondence", "eval.pose_pairs", "eval.object",
                    "data.max_train_scenes", "data.min_object_pixels"], 0)
    check_min(cfg, ["train.lr", "data.focal_depth", "data.focal_pose"], 0, strict=True)
    if cfg.data.depth_target not in ("distance", "z"):
        raise common_config.ConfigError(
            f"data.depth_target: expected 'distance' or 'z', got {cfg.data.depth_target!r}"
        )


def to_dict(cfg: Config) -> dict:
    return common_config.config_to_dict(cfg)
