"""Image quality metrics for novel view synthesis: PSNR and SSIM (pixelSplat / MVSplat protocol).

Images are [..., C, H, W] float in [0, data_range] (channels first, DESIGN.md; C = 3 for RGB),
as torch tensors or numpy arrays; computed in torch float64 on the input tensor's device. Both
images are clipped to [0, data_range] first, as pixelSplat's `compute_psnr` does. Per-image
values are averaged with equal weight per image. LPIPS needs network weights and is not here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WIN = 11  # Gaussian window 11 x 11, sigma 1.5 (Wang et al. 2004; skimage truncate=3.5)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_torch(x, name: str, device=None) -> torch.Tensor:
    if x is None:
        raise ValueError(f"{name}: expected an image tensor or array, got None")
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device if device is not None else x.device, dtype=torch.float64)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a float array ({e})") from None


def _image_pair(pred, gt, data_range: float) -> tuple:
    """(pred, gt) as clipped float64 [B, C, H, W] tensors, plus the batch shape [...]."""
    if not data_range > 0:
        raise ValueError(f"data_range: must be > 0, got {data_range}")
    pred = _to_torch(pred, "pred")
    gt = _to_torch(gt, "gt", device=pred.device)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if pred.ndim < 3:
        raise ValueError(f"pred: expected [..., C, H, W], got shape {tuple(pred.shape)}")
    for name, x in (("pred", pred), ("gt", gt)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or inf")
    batch_shape = tuple(pred.shape[:-3])
    C, H, W = pred.shape[-3:]
    pred = pred.clamp(0, data_range).reshape(-1, C, H, W)  # [B, C, H, W]
    gt = gt.clamp(0, data_range).reshape(-1, C, H, W)
    return pred, gt, batch_shape


def _mask(mask, batch_shape: tuple, H: int, W: int, device) -> torch.Tensor:
    """Mask [..., H, W] or [..., 1, H, W] as a float64 [B, H, W] tensor of 0/1."""
    m = _to_torch(mask, "mask", device=device)
    if m.shape == batch_shape + (1, H, W):
        m = m.squeeze(-3)
    if tuple(m.shape) != batch_shape + (H, W):
        raise ValueError(
            f"mask: expected shape {batch_shape + (H, W)} (or with a 1-channel axis), got {tuple(m.shape)}"
        )
    return (m.reshape(-1, H, W) > 0).double()  # [B, H, W]


def _reduce(values: torch.Tensor, batch_shape: tuple, reduce: str):
    if reduce == "mean":
        return float(values.mean())
    if reduce == "none":
        return values.cpu().numpy().reshape(batch_shape)
    raise ValueError(f"reduce: expected 'mean' or 'none', got {reduce!r}")


def psnr(pred, gt, mask=None, data_range: float = 1.0, reduce: str = "mean"):
    """PSNR = 10 log10(data_range^2 / MSE) per image, averaged over images (pixelSplat).

    MSE is over all pixels and channels of one image. With a mask ([..., H, W]), MSE is the mean
    over the masked pixels only (sum over mask / (mask area * C)). Note the EndoGaussian-style
    "masked image" variant that zeroes pixels outside the mask and then divides by all pixels
    inflates PSNR; we divide by the mask area. Identical images give inf (as skimage).

    reduce="mean" returns a float; reduce="none" returns a numpy array of the batch shape [...].
    """
    pred, gt, batch_shape = _image_pair(pred, gt, data_range)
    B, C, H, W = pred.shape
    sq = (pred - gt) ** 2  # [B, C, H, W]
    if mask is None:
        mse = sq.mean(dim=(1, 2, 3))  # [B]
    else:
        m = _mask(mask, batch_shape, H, W, pred.device)  # [B, H, W]
        area = m.sum(dim=(1, 2))
        if (area == 0).any():
            raise ValueError("mask: an image has an empty mask, its PSNR is undefined")
        mse = (sq * m[:, None]).sum(dim=(1, 2, 3)) / (area * C)
    values = 10 * torch.log10(data_range**2 / mse)  # mse = 0 -> inf
    return _reduce(values, batch_shape, reduce)


def _gaussian_window(device) -> torch.Tensor:
    r = SSIM_WIN // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()  # [11], same taps as scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5)


def ssim_map(pred, gt, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM map [..., C, H - 10, W - 10] (float64), per channel.

    Gaussian-weighted local statistics (11 x 11, sigma 1.5), population (co)variances, C1 =
    (0.01 R)^2, C2 = (0.03 R)^2. Only windows that lie fully inside the image are kept: this is
    the region skimage's `structural_similarity` averages after cropping (11 - 1) / 2 = 5 border
    pixels, so no padding convention matters.
    """
    pred, gt, batch_shape = _image_pair(pred, gt, data_range)
    B, C, H, W = pred.shape
    if H < SSIM_WIN or W < SSIM_WIN:
        raise ValueError(f"pred: SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN}, got {H}x{W}")
    g = _gaussian_window(pred.device)
    x, y = pred.reshape(B * C, 1, H, W), gt.reshape(B * C, 1, H, W)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=0)  # [5 B C, 1, H, W]
    # Separable valid convolution: rows then columns.
    filt = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))  # [5 B C, 1, H-10, W-10]
    mu_x, mu_y, xx, yy, xy = filt.split(B * C, dim=0)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.reshape(batch_shape + (C, H - SSIM_WIN + 1, W - SSIM_WIN + 1))


def ssim(pred, gt, mask=None, data_range: float = 1.0, reduce: str = "mean"):
    """SSIM per image (mean of `ssim_map` over channels and pixels), averaged over images.

    Matches skimage.metrics.structural_similarity(gt, pred, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=0) per image (pixelSplat's
    call). With a mask [..., H, W]: the mean of the map over mask pixels inside the 5-pixel-cropped
    region (all channels); ValueError if an image has none there.

    reduce="mean" returns a float; reduce="none" returns a numpy array of the batch shape [...].
    """
    s = ssim_map(pred, gt, data_range)  # [..., C, H', W']
    batch_shape = tuple(s.shape[:-3])
    C, Hc, Wc = s.shape[-3:]
    s = s.reshape(-1, C, Hc, Wc)  # [B, C, H', W']
    if mask is None:
        values = s.mean(dim=(1, 2, 3))
    else:
        H, W = Hc + SSIM_WIN - 1, Wc + SSIM_WIN - 1
        r = SSIM_WIN // 2
        m = _mask(mask, batch_shape, H, W, s.device)[:, r : H - r, r : W - r]  # [B, H', W']
        area = m.sum(dim=(1, 2))
        if (area == 0).any():
            raise ValueError(
                "mask: an image has no mask pixel away from the 5-pixel border, SSIM is undefined"
            )
        values = (s * m[:, None]).sum(dim=(1, 2, 3)) / (area * C)
    return _reduce(values, batch_shape, reduce)


def ssim_3dgs(pred, gt, data_range: float = 1.0, reduce: str = "mean"):
    """SSIM as 3D Gaussian Splatting's `utils/loss_utils.ssim` computes it (and the 3DGS-derived
    EndoGaussian / Deform3DGS report it): the same Gaussian window and constants as `ssim`, but
    convolved with zero padding of 5 pixels (`F.conv2d(..., padding=5)`) and averaged over the
    full H x W map, borders included. Slightly different from `ssim` (skimage / pixelSplat), which
    averages only the windows inside the image; the leaderboard names which one a number follows.
    """
    pred, gt, batch_shape = _image_pair(pred, gt, data_range)
    B, C, H, W = pred.shape
    g = _gaussian_window(pred.device)
    w = (g[:, None] * g[None, :])[None, None]  # [1, 1, 11, 11]
    x, y = pred.reshape(B * C, 1, H, W), gt.reshape(B * C, 1, H, W)
    r = SSIM_WIN // 2
    conv = lambda t: F.conv2d(t, w, padding=r)  # noqa: E731  [B C, 1, H, W], zero padding
    mu_x, mu_y = conv(x), conv(y)
    var_x, var_y, cov = conv(x * x) - mu_x**2, conv(y * y) - mu_y**2, conv(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _reduce(s.reshape(B, C * H * W).mean(1), batch_shape, reduce)


def psnr_masked_image(pred, gt, mask, data_range: float = 1.0, reduce: str = "mean"):
    """PSNR the way EndoGaussian / EndoNeRF evaluation scripts compute it on masked frames: both
    images multiplied by the tissue mask [..., H, W], then the MSE over *all* pixels (the masked-out
    ones count as perfect zeros), which inflates PSNR by 10 log10(1 / mask fraction) against
    `psnr(..., mask=mask)`. For comparing with their tables only."""
    pred, gt, batch_shape = _image_pair(pred, gt, data_range)
    B, C, H, W = pred.shape
    m = _mask(mask, batch_shape, H, W, pred.device)[:, None]  # [B, 1, H, W]
    mse = ((pred * m - gt * m) ** 2).mean(dim=(1, 2, 3))
    return _reduce(10 * torch.log10(data_range**2 / mse), batch_shape, reduce)
