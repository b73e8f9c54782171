"""IVGT's backbone: VGGT's aggregator (alternating frame / global attention over DINOv2 patch tokens).

Per view the token sequence is [camera token, R register tokens, patch tokens]; the first view has
its own camera / register tokens (it defines the world frame), the other views share a second set.
Each of `depth` iterations runs a frame block (attention within each view, tokens [B*V, T, C]) and
a global block (attention across all views, tokens [B, V*T, C]).

paper.yaml mirrors VGGT-1B exactly, so that its weights load (`ivgt/vggt_weights.py`): a DINOv2
ViT-L/14 with 4 registers as the patch embedding (`encoder_registers`), query-key LayerNorm
(`qk_norm`) and 2D rotary position embedding of frequency 100 (`rope_freq`) in the blocks. The
tiny config keeps all three off (its checkpoints have no such weights).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from ivgt.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RotaryEmbedding2D(nn.Module):
    """2D RoPE as in VGGT (after CroCo / DUSt3R): a head's channels are split in two halves; the
    first is rotated by the token's row, the second by its column, each with the 1D rotary
    frequencies base^(-2j/d) (d = half the head size) and rotate-half pairing. No parameters."""

    def __init__(self, base: float):
        super().__init__()
        self.base = float(base)

    def _rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, heads, N, d], pos [B or 1, N] integer positions -> x rotated."""
        d = x.shape[-1]
        inv_freq = self.base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
        angles = pos.to(torch.float32)[..., None] * inv_freq  # [B, N, d/2]
        angles = torch.cat([angles, angles], -1)[:, None]  # [B, 1, N, d]
        x1, x2 = x.chunk(2, -1)
        return x * angles.cos().to(x.dtype) + torch.cat([-x2, x1], -1) * angles.sin().to(x.dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, heads, N, head_dim], pos [B or 1, N, 2] (row, column) -> [B, heads, N, head_dim]."""
        rows, cols = x.chunk(2, -1)
        return torch.cat([self._rotate(rows, pos[..., 0]), self._rotate(cols, pos[..., 1])], -1)


class Block(nn.Module):
    """Pre-norm transformer block (attention + MLP) with LayerScale, as in DINOv2 / VGGT; optional
    LayerNorm of each head's queries and keys (`qk_norm`) and 2D RoPE (`rope`, shared, no weights)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, init_values: float = 0.01,
                 qk_norm: bool = False, rope: RotaryEmbedding2D | None = None):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.rope = rope
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ls1 = nn.Parameter(torch.full((dim,), init_values))
        self.ls2 = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, C], pos [B or 1, N, 2] token positions (used with RoPE) -> [B, N, C]."""
        B, N, C = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, C/heads]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        attn = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, C/heads]
        x = x + self.ls1 * self.proj(attn.transpose(1, 2).reshape(B, N, C))
        return x + self.ls2 * self.mlp(self.norm2(x))


class Aggregator(nn.Module):
    """VGGT aggregator: DINOv2 patch tokens, a camera token and register tokens per frame (the
    first frame has its own pair), then `depth` pairs of frame attention (within each view) and
    global attention (across all views)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dino = dict(hidden_size=cfg.encoder_dim, num_hidden_layers=cfg.encoder_layers,
                    num_attention_heads=cfg.encoder_heads, intermediate_size=int(cfg.encoder_dim * cfg.mlp_ratio),
                    patch_size=cfg.patch_size, image_size=max(cfg.image_size), layerscale_value=1.0)
        if cfg.encoder_registers:  # DINOv2 with registers (VGGT's dinov2_vitl14_reg)
            self.encoder = Dinov2WithRegistersModel(
                Dinov2WithRegistersConfig(**dino, num_register_tokens=cfg.encoder_registers))
        else:
            self.encoder = Dinov2Model(Dinov2Config(**dino))
        self.encoder_prefix = 1 + cfg.encoder_registers  # CLS (+ registers) before the patch tokens
        self.proj = nn.Linear(cfg.encoder_dim, cfg.dim)
        # [first / other views, camera + R registers, C]
        self.special = nn.Parameter(torch.randn(2, 1 + cfg.num_register_tokens, cfg.dim) * 0.02)
        rope = RotaryEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None
        self.frame_blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, qk_norm=cfg.qk_norm, rope=rope)
                                          for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, qk_norm=cfg.qk_norm, rope=rope)
                                           for _ in range(cfg.depth))
        self.use_rope = rope is not None
        self.patch_size = cfg.patch_size
        self.patch_start = 1 + cfg.num_register_tokens
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def token_positions(self, h: int, w: int, device) -> torch.Tensor:
        """[1, 1 + R + h*w, 2] (row, column) of one view's tokens: patches at 1 + their grid
        position in row-major order, the camera and register tokens at 0 (as VGGT)."""
        rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        grid = torch.stack([rows, cols], -1).reshape(h * w, 2) + 1  # [h*w, 2]
        return torch.cat([grid.new_zeros(self.patch_start, 2), grid])[None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, V, 3, H, W] -> tokens [B, V, 1 + R + P, 2C] (frame and global outputs)."""
        B, V, _, H, W = images.shape
        x = (images.flatten(0, 1) - self.mean) / self.std  # [B*V, 3, H, W]
        patches = self.encoder(pixel_values=x).last_hidden_state[:, self.encoder_prefix:]  # [B*V, P, Ce]
        patches = self.proj(patches)  # [B*V, P, C]
        P, C = patches.shape[1:]
        special = torch.cat([self.special[:1], self.special[1:].expand(V - 1, -1, -1)])  # [V, 1 + R, C]
        tokens = torch.cat([special.repeat(B, 1, 1), patches], 1)  # [B*V, T, C]
        T = tokens.shape[1]
        p = self.patch_size
        pos = self.token_positions(H // p, W // p, images.device) if self.use_rope else None  # [1, T, 2]
        pos_all = None if pos is None else pos.repeat(1, V, 1)  # [1, V*T, 2]: each view's own grid
        frame_out = tokens
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            tokens = frame_block(tokens, pos)  # attention within each frame
            frame_out = tokens
            tokens = global_block(tokens.reshape(B, V * T, C), pos_all).reshape(B * V, T, C)  # across frames
        return torch.cat([frame_out, tokens], -1).reshape(B, V, T, 2 * C)
