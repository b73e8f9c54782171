"""VGGT-1B's aggregator as IVGT's backbone: the key map from the official checkpoint and its loader.

The official checkpoint (`facebook/VGGT-1B`, `model.safetensors`, written by facebookresearch/vggt's
`VGGT` model) holds `aggregator.*` (the backbone) and the heads `camera_head.*`, `depth_head.*`,
`point_head.*`, `track_head.*`. IVGT's aggregator (`ivgt/aggregator.py`) is VGGT's when the config
says so (paper.yaml: dim = encoder_dim = 1024, 24 block pairs, 16 heads, 4 DINOv2 registers, 4
aggregator registers, qk_norm, rope_freq 100, 518 px, patch 14), and every aggregator tensor lands
in one of ours, renamed, the DINOv2 qkv split into q, k, v:

    aggregator.camera_token [1, 2, 1, C] + register_token [1, 2, R, C]  -> aggregator.special [2, 1 + R, C]
    aggregator.patch_embed.cls_token / pos_embed / register_tokens / mask_token
                                     -> aggregator.encoder.embeddings.cls_token / position_embeddings / ...
    aggregator.patch_embed.patch_embed.proj.*  -> aggregator.encoder.embeddings.patch_embeddings.projection.*
    aggregator.patch_embed.blocks.i.attn.qkv.* [3C, ...] -> ...encoder.layer.i.attention.{q,k,v}_proj.*
    aggregator.patch_embed.blocks.i.attn.proj.* -> ...encoder.layer.i.attention.o_proj.*
    aggregator.patch_embed.blocks.i.ls{1,2}.gamma -> ...encoder.layer.i.layer_scale{1,2}.lambda1
    aggregator.patch_embed.blocks.i.{norm1,norm2,mlp.fc1,mlp.fc2}.* -> ...encoder.layer.i.(same).*
    aggregator.patch_embed.norm.*    -> aggregator.encoder.layernorm.*
    aggregator.{frame,global}_blocks.i.attn.{qkv,q_norm,k_norm,proj}.* -> aggregator.{frame,global}_blocks.i.{...}.*
    aggregator.{frame,global}_blocks.i.ls{1,2}.gamma -> ...ls{1,2};  mlp.fc1 / mlp.fc2 -> mlp.0 / mlp.2

What has no source: `aggregator.proj` (ours projects encoder_dim -> dim; VGGT has no projection,
so it is set to the identity and zero bias, which needs encoder_dim == dim). What is not used: the
four VGGT heads (IVGT's camera head is a 2-block trunk with another output parametrisation, its
dense heads are not DPT); they are counted, not read. Pickled checkpoints (VGGT's older `model.pt`)
are refused: nothing here calls torch.load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from common.checkpoint import PICKLED_SUFFIXES, check_safetensors
from common.errors import CheckpointError

PREFIX = "aggregator."


def vggt_weights_file(path) -> Path:
    """The safetensors file of a VGGT checkpoint: `path` itself or `path/model.safetensors`. A missing
    file, a pickle (`model.pt`, `.bin`) or an unreadable file is one CheckpointError naming it."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            path = path / "model.safetensors"
        else:
            pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES)
            raise CheckpointError(path, "no model.safetensors in the folder" + (
                f"; found pickled weights {pickled}, which are not loaded (use facebook/VGGT-1B's model.safetensors)"
                if pickled else " (expected facebook/VGGT-1B's model.safetensors)"))
    if path.suffix in PICKLED_SUFFIXES:
        raise CheckpointError(path, f"a pickled checkpoint ({path.suffix}) is not loaded (no torch.load); "
                                    "use facebook/VGGT-1B's model.safetensors")
    check_safetensors(path)  # missing, truncated, or a pickle renamed .safetensors
    return path


def official_shapes(model) -> dict[str, tuple]:
    """The VGGT aggregator keys (without `aggregator.`) and their shapes at IVGT `model`'s config."""
    cfg = model.cfg
    C, Ce, p = cfg.dim, cfg.encoder_dim, cfg.patch_size
    M = int(Ce * cfg.mlp_ratio)
    n_pos = 1 + (max(cfg.image_size) // p) ** 2  # CLS + the square grid of the encoder's image size
    shapes = {"camera_token": (1, 2, 1, C), "register_token": (1, 2, cfg.num_register_tokens, C),
              "patch_embed.cls_token": (1, 1, Ce), "patch_embed.pos_embed": (1, n_pos, Ce),
              "patch_embed.mask_token": (1, Ce), "patch_embed.patch_embed.proj.weight": (Ce, 3, p, p),
              "patch_embed.patch_embed.proj.bias": (Ce,), "patch_embed.norm.weight": (Ce,),
              "patch_embed.norm.bias": (Ce,)}
    if cfg.encoder_registers:
        shapes["patch_embed.register_tokens"] = (1, cfg.encoder_registers, Ce)

    def block(prefix: str, dim: int, hidden: int, head_dim: int | None) -> None:
        for name, shape in (("norm1", (dim,)), ("norm2", (dim,)), ("attn.qkv", (3 * dim, dim)),
                            ("attn.proj", (dim, dim)), ("mlp.fc1", (hidden, dim)), ("mlp.fc2", (dim, hidden))):
            shapes[f"{prefix}.{name}.weight"] = shape
            shapes[f"{prefix}.{name}.bias"] = shape[:1]
        shapes[f"{prefix}.ls1.gamma"] = shapes[f"{prefix}.ls2.gamma"] = (dim,)
        if head_dim is not None:  # VGGT's aggregator blocks normalise queries and keys
            for name in ("q_norm", "k_norm"):
                shapes[f"{prefix}.attn.{name}.weight"] = shapes[f"{prefix}.attn.{name}.bias"] = (head_dim,)

    for i in range(cfg.encoder_layers):
        block(f"patch_embed.blocks.{i}", Ce, M, None)
    for kind in ("frame_blocks", "global_blocks"):
        for i in range(cfg.depth):
            block(f"{kind}.{i}", C, int(C * cfg.mlp_ratio), C // cfg.heads)
    return shapes


def to_ivgt(tensors: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """VGGT aggregator tensors (keys without `aggregator.`) -> IVGT state-dict entries (keys under
    `aggregator.`), following the map in the module docstring."""
    out = {"special": torch.cat([tensors["camera_token"][0], tensors["register_token"][0]], 1)}  # [2, 1 + R, C]
    enc = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "register_tokens": "embeddings.register_tokens", "mask_token": "embeddings.mask_token",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    layer = {"attn.proj": "attention.o_proj", "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
    block = {"attn.qkv": "qkv", "attn.q_norm": "q_norm", "attn.k_norm": "k_norm", "attn.proj": "proj",
             "ls1.gamma": "ls1", "ls2.gamma": "ls2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}
    for key, value in tensors.items():
        if key in ("camera_token", "register_token"):
            continue
        if key.startswith("patch_embed.blocks."):
            i, rest = key[len("patch_embed.blocks."):].split(".", 1)
            target = f"encoder.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):  # DINOv2's fused [q; k; v] rows -> transformers' three projections
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, 0)):
                    out[f"{target}attention.{part}.{rest.rsplit('.', 1)[1]}"] = chunk
            else:
                out[target + _rename(rest, layer)] = value
        elif key.startswith("patch_embed."):
            out["encoder." + enc[key[len("patch_embed."):]]] = value
        else:  # frame_blocks.i.* / global_blocks.i.*
            kind, i, rest = key.split(".", 2)
            out[f"{kind}.{i}." + _rename(rest, block)] = value
    return {PREFIX + k: v for k, v in out.items()}


def _rename(rest: str, table: dict) -> str:
    """`rest` (a parameter path inside a block) renamed by `table` (whole path or module path)."""
    if rest in table:
        return table[rest]
    module, param = rest.rsplit(".", 1)
    return f"{table.get(module, module)}.{param}"


def load_vggt_aggregator(model, path) -> dict:
    """Copy VGGT's aggregator from `path` (model.safetensors or its folder) into `model.aggregator`.

    Every expected key must be in the file, no other `aggregator.*` key may be, and every shape must
    be the config's; otherwise one CheckpointError naming the file and the first such key, before any
    tensor is copied. `aggregator.proj` becomes the identity (VGGT has no projection). Returns a
    report: file, tensors loaded, the unused keys per top-level module, what was initialised."""
    cfg = model.cfg
    file = vggt_weights_file(path)
    for field, ok, want in (("encoder_dim", cfg.encoder_dim == cfg.dim, f"= model.dim ({cfg.dim})"),
                            ("qk_norm", cfg.qk_norm, "true"), ("rope_freq", cfg.rope_freq > 0, "> 0 (VGGT: 100)")):
        if not ok:
            raise CheckpointError(file, f"model.{field}: {getattr(cfg, field)!r}, VGGT's aggregator needs {want}; "
                                        "use ivgt/configs/paper.yaml")
    expected = official_shapes(model)
    with safe_open(str(file), framework="pt") as f:
        keys = list(f.keys())
        ours = {k[len(PREFIX):] for k in keys if k.startswith(PREFIX)}
        unused: dict[str, int] = {}
        for k in keys:
            if not k.startswith(PREFIX):
                unused[k.split(".", 1)[0]] = unused.get(k.split(".", 1)[0], 0) + 1
        missing, extra = sorted(set(expected) - ours), sorted(ours - set(expected))
        if missing:
            raise CheckpointError(file, f"no tensor '{PREFIX}{missing[0]}' ({len(missing)} of the {len(expected)} "
                                        "VGGT aggregator tensors this config expects are missing)")
        if extra:
            raise CheckpointError(file, f"unexpected tensor '{PREFIX}{extra[0]}' ({len(extra)} in all): not a VGGT "
                                        "aggregator of this config (encoder_layers, depth, encoder_registers?)")
        for k in sorted(expected):
            shape = tuple(f.get_slice(PREFIX + k).get_shape())
            if shape != expected[k]:
                raise CheckpointError(file, f"'{PREFIX}{k}' has shape {list(shape)}, this config expects "
                                            f"{list(expected[k])} (image_size, patch_size, dim, heads, registers?)")
        tensors = {k: f.get_tensor(PREFIX + k) for k in sorted(expected)}
    state = to_ivgt(tensors, model)
    own = model.state_dict()
    identity = {"aggregator.proj.weight": torch.eye(cfg.dim, cfg.encoder_dim),  # VGGT: no projection
                "aggregator.proj.bias": torch.zeros(cfg.dim)}
    target = {k for k in own if k.startswith(PREFIX)}
    uncovered, stray = sorted(target - set(state) - set(identity)), sorted(set(state) - target)
    if uncovered or stray:  # the map and the module disagree (e.g. renamed transformers layers)
        raise CheckpointError(file, f"the VGGT key map does not cover IVGT's aggregator: without a source "
                                    f"{uncovered[:3]}, without a target {stray[:3]}")
    with torch.no_grad():
        for k, v in {**state, **identity}.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(file, f"'{k}': mapped shape {list(v.shape)}, IVGT has {list(own[k].shape)}")
            own[k].copy_(v.to(own[k].dtype))
    return {"file": str(file), "loaded": len(tensors), "unused": unused, "initialised": sorted(identity)}


def report_line(report: dict) -> str:
    """One line: what was loaded, what was not used, what was set."""
    unused = ", ".join(f"{k} ({n} tensors)" for k, n in sorted(report["unused"].items())) or "nothing"
    return (f"{report['file']}: VGGT aggregator loaded ({report['loaded']} tensors); not used: {unused}; "
            f"aggregator.proj set to the identity")
