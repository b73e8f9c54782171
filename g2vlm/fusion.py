"""Cross-modal fusion: language tokens attend to geometry tokens, with a geometry-aware attention bias.

For head h, language token i and geometry token j (position p_j in metres), the logits are

    l_hij = q_hi . k_hj / sqrt(d)                       (plain cross-attention)
    a_hi  = sum_j softmax_j(l_hij / tau) p_j            (token i's 3D focus: a soft argmax, tau = 0.1)
    b_hij = -|p_j - a_hi|^2 / (2 sigma_h^2)             (geometry-aware bias, sigma_h learned per head)
    attn_hij = softmax_j(l_hij + b_hij)

The bias is a Gaussian in 3D around the point the token already attends to most, so the attention
gathers around the referred region instead of spreading over similar-looking tokens elsewhere in the
scene (the G2VLM text: "geometry-aware biases steer attention towards geometrically relevant
regions"); as sigma grows it vanishes. The output projection starts at zero, so fusion starts as the
identity on the language model's embeddings. `use_bias=False` is the plain cross-attention (the
"without geometry grounding" ablation).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

FOCUS_TEMPERATURE = 0.1


class GeometryCrossAttention(nn.Module):
    def __init__(self, dim: int, geo_dim: int, heads: int = 4, sigma: float = 1.0, use_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion: width {dim} is not a multiple of {heads} heads")
        self.heads, self.use_bias = heads, use_bias
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(geo_dim, dim)
        self.v = nn.Linear(geo_dim, dim)
        self.o = nn.Linear(dim, dim)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)
        self.log_sigma = nn.Parameter(torch.full((heads,), math.log(sigma)))

    def attention(
        self, x: torch.Tensor, feats: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor | None = None
    ):
        """x [B, L, C], feats [B, T, Cg], xyz [B, T, 3], mask [B, T] (True = real token) ->
        (attention [B, H, L, T], values [B, H, T, d])."""
        B, L, C = x.shape
        T, H = feats.shape[1], self.heads
        q = self.q(self.norm(x)).view(B, L, H, -1).transpose(1, 2)  # [B, H, L, d]
        k = self.k(feats).view(B, T, H, -1).transpose(1, 2)  # [B, H, T, d]
        v = self.v(feats).view(B, T, H, -1).transpose(1, 2)  # [B, H, T, d]
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, L, T]
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None], float("-inf"))
        if self.use_bias:
            focus = torch.softmax(logits / FOCUS_TEMPERATURE, -1) @ xyz[:, None]  # [B, H, L, 3]
            # |p_j - a_i|^2 = |p_j|^2 + |a_i|^2 - 2 a_i . p_j, without a [B, H, L, T, 3] tensor
            dist2 = (xyz.pow(2).sum(-1)[:, None, None] + focus.pow(2).sum(-1, keepdim=True)
                     - 2 * focus @ xyz[:, None].transpose(-1, -2)).clamp_min(0)  # [B, H, L, T]
            sigma2 = torch.exp(2 * self.log_sigma)[None, :, None, None]
            logits = logits - dist2 / (2 * sigma2)
        return torch.softmax(logits, -1), v

    def forward(self, x, feats, xyz, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (x + fused [B, L, C], attention [B, H, L, T])."""
        attn, v = self.attention(x, feats, xyz, mask)
        out = (attn @ v).transpose(1, 2).reshape(x.shape)  # [B, L, C]
        return x + self.o(out), attn


class Fusion(nn.Module):
    """`layers` GeometryCrossAttention blocks applied to the language model's input embeddings."""

    def __init__(
        self,
        dim: int,
        geo_dim: int,
        layers: int = 2,
        heads: int = 4,
        sigma: float = 1.0,
        use_bias: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            [GeometryCrossAttention(dim, geo_dim, heads, sigma, use_bias) for _ in range(layers)]
        )

    def forward(self, x, feats, xyz, mask=None) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x, feats, xyz, mask)
        return x


def pad_tokens(token_sets: list) -> tuple:
    """GeometryTokens of several scenes -> (feats [B, T, C], xyz [B, T, 3], mask [B, T])."""
    T = max(t.xyz.shape[0] for t in token_sets)
    C = token_sets[0].feats.shape[1]
    feats = token_sets[0].feats.new_zeros(len(token_sets), T, C)
    xyz = token_sets[0].xyz.new_zeros(len(token_sets), T, 3)
    mask = torch.zeros(len(token_sets), T, dtype=torch.bool, device=xyz.device)
    for b, t in enumerate(token_sets):
        n = t.xyz.shape[0]
        feats[b, :n], xyz[b, :n], mask[b, :n] = t.feats, t.xyz, True
    return feats, xyz, mask
