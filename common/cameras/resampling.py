"""Image geometry: resize, crop, resample between pinhole cameras, focal-length unification."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.cameras.geometry import _broadcast_shapes, _check_shape, _unproject_z1, pixel_centers, project


# ----------------------------------------------------------------------------------------------
# Image geometry: resize, crop, resample between pinhole cameras, focal-length unification
# ----------------------------------------------------------------------------------------------


def resize_intrinsics(K: torch.Tensor, old_size, new_size) -> torch.Tensor:
    """K [..., 3, 3] of an image resized from old_size (H, W) to new_size (H2, W2).

    With pixel centres at +0.5 the image edges map to the edges, so scaling the first row by
    W2/W and the second by H2/H is exact (cx' = cx * W2/W, no half-pixel shift).
    """
    _check_shape("K", K, (3, 3))
    sy, sx = new_size[0] / old_size[0], new_size[1] / old_size[1]
    scale = torch.tensor([sx, sy, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def crop_intrinsics(K: torch.Tensor, top, left) -> torch.Tensor:
    """K [..., 3, 3] of the crop whose top-left pixel is (row top, column left) of the image.

    top, left: ints or tensors [...]; the principal point shifts by (-left, -top).
    """
    _check_shape("K", K, (3, 3))
    shift = torch.zeros_like(K)  # [..., 3, 3]
    shift[..., 0, 2] = torch.as_tensor(left, dtype=K.dtype, device=K.device)
    shift[..., 1, 2] = torch.as_tensor(top, dtype=K.dtype, device=K.device)
    return K - shift


def map_pixels(uv: torch.Tensor, K_src: torch.Tensor, K_dst: torch.Tensor) -> torch.Tensor:
    """Map pixel coordinates uv [..., N, 2] between two pinhole cameras at the same pose.

    x' = (x - cx) * fx'/fx + cx' (and the same for y; skew is handled). Applied to pixel centres
    (u + 0.5, v + 0.5) this is consistent with `resize_intrinsics` and `unify_focal`. DepthLM
    applies the same formula to its labelled pixels after focal-length unification.
    """
    _check_shape("uv", uv, ("N", 2))
    _check_shape("K_src", K_src, (3, 3))
    _check_shape("K_dst", K_dst, (3, 3))
    return project(_unproject_z1(uv, K_src), K_dst)


def _gaussian_blur(image: torch.Tensor, sigma_y: float, sigma_x: float) -> torch.Tensor:
    """Separable Gaussian blur of image [B, C, H, W] with replicated borders."""
    B, C, H, W = image.shape
    out = image.reshape(B * C, 1, H, W)
    for sigma, horizontal in ((sigma_x, True), (sigma_y, False)):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)  # [k]
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = kernel / kernel.sum()
        if horizontal:
            out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        else:
            out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.reshape(B, C, H, W)


def resample_to_intrinsics(image: torch.Tensor, K: torch.Tensor, K_new: torch.Tensor, new_size,
                           mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """Warp image [..., C, H, W] seen by K [..., 3, 3] to the camera K_new at the same pose.

    Exact warp between pinhole cameras: the target pixel (u', v') samples the source at
    K @ inv(K_new) @ [u' + 0.5, v' + 0.5, 1]. Returns [..., C, H2, W2] for new_size (H2, W2);
    target pixels whose centre falls outside the source image are 0.

    mode "bilinear": `grid_sample(align_corners=False)` with border padding inside the source
    image (no dark seam at the edges); with antialias=True and a downsampling factor s > 1 along
    an axis, the source is first blurred with a Gaussian of sigma (s - 1) / 2 source pixels (the
    choice of scikit-image's resize). Skew-free K assumed for the blur width.
    mode "nearest": takes the source pixel containing the sample point (floor), for depth maps
    and ids; never blends, works for any dtype, ignores antialias.
    """
    _check_shape("image", image, ("C", "H", "W"))
    _check_shape("K", K, (3, 3))
    _check_shape("K_new", K_new, (3, 3))
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if mode == "bilinear" and not image.is_floating_point():
        raise ValueError(f"image: mode 'bilinear' needs a floating image, got {image.dtype}; "
                         f"use mode='nearest' for ids")
    H2, W2 = int(new_size[0]), int(new_size[1])
    *_, C, H, W = image.shape
    batch = _broadcast_shapes(image.shape[:-3], K.shape[:-2], K_new.shape[:-2])
    dtype = torch.promote_types(K.dtype, K_new.dtype)
    src_img = image.expand(*batch, C, H, W).reshape(-1, C, H, W)  # [B, C, H, W]
    K_b = K.to(dtype).expand(*batch, 3, 3).reshape(-1, 3, 3)  # [B, 3, 3]
    K_new_b = K_new.to(dtype).expand(*batch, 3, 3).reshape(-1, 3, 3)  # [B, 3, 3]

    centers = pixel_centers(H2, W2, device=image.device, dtype=dtype).reshape(1, -1, 2)  # [1, H2*W2, 2]
    src = map_pixels(centers, K_new_b, K_b).reshape(-1, H2, W2, 2)  # [B, H2, W2, 2] source x, y
    x, y = src[..., 0], src[..., 1]  # [B, H2, W2]
    inside = (x >= 0) & (x <= W) & (y >= 0) & (y <= H)  # [B, H2, W2]

    if mode == "nearest":
        ix = x.floor().clamp(0, W - 1).long()  # [B, H2, W2]
        iy = y.floor().clamp(0, H - 1).long()
        index = (iy * W + ix).flatten(1)[:, None, :].expand(-1, C, -1)  # [B, C, H2*W2]
        out = src_img.flatten(-2).gather(-1, index).unflatten(-1, (H2, W2))  # [B, C, H2, W2]
        out = torch.where(inside[:, None], out, torch.zeros_like(out))
        return out.reshape(*batch, C, H2, W2)

    if antialias:
        # Downsampling factor = source pixels per target pixel along each axis.
        sigmas = ((torch.stack([K_b[:, 1, 1] / K_new_b[:, 1, 1], K_b[:, 0, 0] / K_new_b[:, 0, 0]], -1).abs()
                   - 1) / 2).clamp_min(0).tolist()  # [B][sigma_y, sigma_x]
        if all(s == sigmas[0] for s in sigmas):
            src_img = _gaussian_blur(src_img, *sigmas[0])
        else:  # different cameras in the batch need different blurs
            src_img = torch.cat([_gaussian_blur(src_img[i:i + 1], *s) for i, s in enumerate(sigmas)])
    grid = torch.stack([2 * x / W - 1, 2 * y / H - 1], dim=-1).to(image.dtype)  # [B, H2, W2, 2]
    out = F.grid_sample(src_img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * inside[:, None].to(out.dtype)  # [B, C, H2, W2]
    return out.reshape(*batch, C, H2, W2)


def resize(image: torch.Tensor, K: torch.Tensor, new_size, mode: str = "bilinear",
           antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image [..., C, H, W] to new_size (H2, W2); returns (image [..., C, H2, W2], K_new)."""
    _check_shape("image", image, ("C", "H", "W"))
    K_new = resize_intrinsics(K, image.shape[-2:], new_size)
    return resample_to_intrinsics(image, K, K_new, new_size, mode=mode, antialias=antialias), K_new


def crop(image: torch.Tensor, K: torch.Tensor, top: int, left: int, height: int,
         width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop image [..., C, H, W] to rows [top, top + height) and columns [left, left + width).

    Returns (image [..., C, height, width], K_new). Parts of the window outside the image are 0,
    as in `resample_to_intrinsics`.
    """
    _check_shape("image", image, ("C", "H", "W"))
    H, W = image.shape[-2:]
    out = image.new_zeros(*image.shape[:-2], height, width)  # [..., C, height, width]
    y0, y1 = max(top, 0), min(top + height, H)
    x0, x1 = max(left, 0), min(left + width, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = image[..., y0:y1, x0:x1]
    return out, crop_intrinsics(K, top, left)


def unify_focal(image: torch.Tensor, K: torch.Tensor, focal: float, mode: str = "bilinear",
                antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image [..., C, H, W] so that fx' = fy' = focal (focal-length unification).

    DepthLM and VLM3 feed every image to the VLM at one canonical focal length (1000 px; VLM3's
    pose evaluation uses 750) so that metric depth is identifiable from the image alone. Per axis
    the scale is focal/fx and focal/fy: this first makes fx == fy by scaling one axis, then scales
    both to `focal`. The new size is (floor(H * focal / fy), floor(W * focal / fx)), the
    principal point (and skew) scale with their axes, K_new [..., 3, 3] has fx = fy = focal
    exactly, and the image is produced by one `resample_to_intrinsics` call, so K_new describes
    it exactly; the fraction of a pixel lost to the floor is cut at the right and bottom edges.

    DepthLM instead undistorts to an OpenCV "optimal new camera matrix" when fx != fy, then
    resizes to (floor(W s), floor(H s)) with s = focal/fx and multiplies K by s: the image is
    really scaled by floor(W s)/W, so its K is off by up to one pixel across the image. Labelled
    pixels move with `map_pixels` (DepthLM's x' = (x - cx) fx'/fx + cx').

    All K in a batch must give the same new size (else ValueError). Use mode="nearest" for depth.
    """
    _check_shape("image", image, ("C", "H", "W"))
    _check_shape("K", K, (3, 3))
    H, W = image.shape[-2:]
    fx, fy = K[..., 0, 0], K[..., 1, 1]  # [...]
    sizes = {
        (math.floor(H * focal / fy_i + 1e-6), math.floor(W * focal / fx_i + 1e-6))  # tolerate rounding
        for fx_i, fy_i in zip(fx.reshape(-1).tolist(), fy.reshape(-1).tolist())
    }
    if len(sizes) != 1:
        raise ValueError(f"K: the cameras in the batch give different unified sizes {sorted(sizes)}; "
                         f"call unify_focal per image")
    new_size = sizes.pop()
    if new_size[0] < 1 or new_size[1] < 1:
        raise ValueError(f"focal: {focal} gives an empty image {new_size} from size {(H, W)}")
    scale = torch.stack([focal / fx, focal / fy, torch.ones_like(fx)], dim=-1)  # [..., 3]
    K_new = K * scale[..., :, None]  # [..., 3, 3]
    K_new[..., 0, 0] = focal  # exact, not focal / fx * fx
    K_new[..., 1, 1] = focal
    return resample_to_intrinsics(image, K, K_new, new_size, mode=mode, antialias=antialias), K_new
