"""Baselines of the reproduce table: the "two models" pipeline's separate depth network and a
median-depth constant.

`DepthNet` is the depth network a VLM pipeline would run beside the VLM: the same Qwen3-VL vision
encoder architecture and the same DPT head, fed with the three DeepStack features and the
encoder's merged output instead of the language model's states; every parameter trains. It is
about the size of DepthVLM's encoder plus head, so the comparison isolates what reading depth
from the language backbone (and sharing one forward pass) changes.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from transformers import Qwen3VLVisionConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

from depthvlm.head import DPTDepthHead
from depthvlm.model import silog_loss


class DepthNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, vision_config: dict, head_config: dict):
        super().__init__()
        self.visual = Qwen3VLVisionModel(Qwen3VLVisionConfig(**vision_config))
        self.depth_head = DPTDepthHead(self.visual.config.out_hidden_size, **head_config)

    def forward(self, pixel_values, image_grid_thw, image_sizes) -> list[torch.Tensor]:
        out = self.visual(pixel_values, grid_thw=image_grid_thw, return_dict=True)
        merge = self.visual.config.spatial_merge_size
        grids = (image_grid_thw[:, 1:] // merge).tolist()
        counts = [h * w for h, w in grids]
        feats = [f.split(counts) for f in out.deepstack_features] + [out.pooler_output.split(counts)]
        return [self.depth_head([f[i].reshape(h, w, -1) for f in feats], tuple(s))  # [H, W]
                for i, ((h, w), s) in enumerate(zip(grids, image_sizes.tolist()))]


def depthnet_from_vlm_config(vlm_config) -> DepthNet:
    v = vlm_config.vision_config.to_dict()
    keep = ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size",
            "temporal_patch_size", "out_hidden_size", "num_position_embeddings", "deepstack_visual_indexes")
    return DepthNet({k: v[k] for k in keep}, dict(vlm_config.depth_head or {}))


def train_depthnet(net, processor, items, steps: int, lr: float, batch_size: int, seed: int, grad_clip=1.0,
                   lam: float = 0.5, log=None) -> dict:
    """SILog training of every parameter on the same items DepthVLM sees (same batch sampler)."""
    from tqdm import tqdm

    device = next(net.parameters()).device
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    from depthvlm.train import _lr_lambda

    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(max(1, int(0.04 * steps)), steps))
    net.train()
    loss = None
    for step in tqdm(range(steps), desc="depth net", unit="step", disable=None):
        rng = np.random.default_rng([seed, 4, step])
        idx = rng.choice(len(items), size=min(batch_size, len(items)), replace=False)
        batch = processor([items[i].image for i in idx], [""] * len(idx))
        preds = net(batch["pixel_values"].to(device), batch["image_grid_thw"].to(device), batch["image_sizes"])
        loss = torch.stack([silog_loss(p, items[i].depth.to(device), lam) for p, i in zip(preds, idx)]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        sched.step()
        if log is not None:
            log.write(f'{{"stage": "depthnet", "step": {step}, "loss": {loss.item()}}}\n')
    return {"loss": None if loss is None else loss.item()}


@torch.no_grad()
def predict_depthnet(net, processor, items, batch_size: int = 16) -> list[np.ndarray]:
    net.eval()
    device = next(net.parameters()).device
    out = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch = processor([it.image for it in chunk], [""] * len(chunk))
        out += [p.float().cpu().numpy() for p in net(batch["pixel_values"].to(device),
                                                     batch["image_grid_thw"].to(device), batch["image_sizes"])]
    return out


def median_depth(items) -> float:
    """Median of every valid training depth pixel (one constant for all images and domains)."""
    return float(torch.cat([it.depth[it.depth > 0] for it in items]).median())


def prior_answers(train_items) -> dict:
    """The answers a text-only prior gives: the median training answer per numeric question type."""
    values = {}
    for it in train_items:
        for q in it.questions:
            if q["type"] != "closer":
                values.setdefault(q["type"], []).append(q["value"])
    return {t: float(np.median(v)) for t, v in values.items()}
