"""The emergence probe: is depth linearly readable from the visual encoder's features?

The paper's thesis is that 3D perception emerges in the encoder itself. The direct test: freeze
the encoder, take its patch features (the layer the projector reads), fit one linear map
(ridge regression, closed form) from a patch's feature to the log of its mean ground-truth depth
on training scenes, and score it on held-out scenes (delta1, AbsRel of exp(prediction) against the
patch's mean depth, `common.metrics.depth_metrics`, metric, no alignment). The same probe on the
untrained encoder and on the baseline's (trained without auxiliary losses) says what training
pressure added.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.metrics import depth_metrics


@torch.no_grad()
def patch_depth_features(model, scenes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> features [N, Cv], mean depth [N] (metres), scene index [N] over the patches of every
    frame that have valid depth. Scenes must be prepared (`ide3d.data.prepare`)."""
    model.eval()
    device = next(model.parameters()).device
    patch = model.config.vision_config.patch_size
    layer = model.config.vision_feature_layer
    X, y, owner = [], [], []
    for i, s in enumerate(scenes):
        hidden = model.model.vision_tower(
            s.inputs.pixel_values.to(device), output_hidden_states=True
        ).hidden_states
        feats = hidden[layer].float().cpu()  # [F, g*g, Cv]
        g = int(round(feats.shape[1] ** 0.5))
        depth = s.inputs.depth[:, None, : g * patch, : g * patch]  # [F, 1, g*p, g*p]
        valid = (depth > 0).float()
        total = F.avg_pool2d(depth * valid, patch)[:, 0].flatten(1)  # [F, g*g]
        count = F.avg_pool2d(valid, patch)[:, 0].flatten(1)  # [F, g*g]
        keep = count > 0.5  # patches mostly covered by valid depth
        X.append(feats[keep].numpy())
        y.append((total[keep] / count[keep]).numpy())
        owner.append(np.full(int(keep.sum()), i))
    return np.concatenate(X), np.concatenate(y), np.concatenate(owner)


def fit_ridge(
    X: np.ndarray, y: np.ndarray, ridge: float = 1e-2
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Standardised ridge regression y ~ X w + b. Returns (w, b, mean, std) of the standardisation."""
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    A = Z.T @ Z + ridge * len(Z) * np.eye(Z.shape[1])
    w = np.linalg.solve(A, Z.T @ (y - y.mean()))
    return w, float(y.mean()), mean, std


def depth_probe(model, train_scenes, test_scenes, ridge: float = 1e-2) -> tuple[dict, dict]:
    """Fit on `train_scenes`, score on `test_scenes`. -> ({probe_delta1, probe_abs_rel},
    per-scene values {probe_delta1: [S], probe_abs_rel: [S]} for bootstrap intervals)."""
    X, y, _ = patch_depth_features(model, train_scenes)
    w, b, mean, std = fit_ridge(X, np.log(y), ridge)
    Xt, yt, owner = patch_depth_features(model, test_scenes)
    pred = np.exp(((Xt - mean) / std) @ w + b)  # [N] metres
    overall = depth_metrics(pred[None], yt[None], align=None)
    per = {"probe_delta1": [], "probe_abs_rel": []}
    for i in np.unique(owner):
        m = depth_metrics(pred[owner == i][None], yt[owner == i][None], align=None)
        per["probe_delta1"].append(m["delta1"])
        per["probe_abs_rel"].append(m["abs_rel"])
    return (
        {"probe_delta1": overall["delta1"], "probe_abs_rel": overall["abs_rel"]},
        {k: np.array(v) for k, v in per.items()},
    )
