import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from common.metrics import psnr, ssim, ssim_map


def random_pair(shape, seed):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 1, size=shape)
    pred = np.clip(gt + rng.normal(0, 0.1, size=shape), 0, 1)
    return pred, gt


def test_psnr_hand_computed():
    gt = np.zeros((3, 2, 2))
    pred = np.zeros((3, 2, 2))
    pred[0, 0, 0] = 0.5  # MSE = 0.25 / 12
    assert psnr(pred, gt) == pytest.approx(-10 * math.log10(0.25 / 12))
    # masked: only pixel (0, 0) -> MSE over it and its 3 channels = 0.25 / 3
    mask = np.zeros((2, 2), bool)
    mask[0, 0] = True
    assert psnr(pred, gt, mask=mask) == pytest.approx(-10 * math.log10(0.25 / 3))
    # values outside [0, 1] are clipped first: 1.5 -> 1 gives MSE 1 / 12
    pred2 = np.zeros((3, 2, 2))
    pred2[1, 1, 1] = 1.5
    assert psnr(pred2, gt) == pytest.approx(-10 * math.log10(1 / 12))
    assert psnr(gt, gt) == math.inf


def test_psnr_matches_skimage_and_averages_per_image():
    pred, gt = random_pair((2, 3, 16, 20), seed=0)
    ref = [peak_signal_noise_ratio(gt[i], pred[i], data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(psnr(pred, gt, reduce="none"), ref, atol=1e-10)
    assert psnr(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(np.mean(ref), abs=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ssim_matches_skimage(dtype):
    pred, gt = random_pair((3, 3, 24, 31), seed=1)
    pred, gt = pred.astype(dtype), gt.astype(dtype)
    ref = [
        structural_similarity(
            gt[i],
            pred[i],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        for i in range(3)
    ]
    ours = ssim(torch.from_numpy(pred), torch.from_numpy(gt), reduce="none")
    assert ours.shape == (3,)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ssim(pred, gt) == pytest.approx(np.mean(ref), abs=1e-5)


def test_ssim_identical_and_constant_shift():
    _, gt = random_pair((3, 16, 16), seed=2)
    assert ssim(gt, gt) == pytest.approx(1.0)
    # a constant image vs another constant: variances 0, SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    s = ssim(np.full((3, 12, 12), a), np.full((3, 12, 12), b))
    assert s == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1))


def test_ssim_map_and_mask():
    pred, gt = random_pair((2, 3, 20, 20), seed=3)
    smap = ssim_map(pred, gt)
    assert smap.shape == (2, 3, 10, 10)  # 5-pixel border cropped
    mask = np.zeros((2, 20, 20), bool)
    mask[:, 5:10, 5:15] = True  # inside the cropped region: map rows 0:5, cols 0:10
    expected = smap[:, :, 0:5, 0:10].mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ssim(pred, gt, mask=mask, reduce="none"), expected, atol=1e-12)
    # mask pixels on the border are outside the map and ignored
    mask[:, 0:5, :] = True
    np.testing.assert_allclose(ssim(pred, gt, mask=mask, reduce="none"), expected, atol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="mask"):
        psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="mask: expected shape"):
        psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), mask=np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="reduce"):
        psnr(np.zeros((3, 4, 4)), np.ones((3, 4, 4)), reduce="sum")
    with pytest.raises(ValueError, match="pred: contains NaN"):
        psnr(np.full((3, 4, 4), np.nan), np.zeros((3, 4, 4)))


def test_ssim_3dgs_matches_a_zero_padded_full_map_reference():
    from scipy.ndimage import gaussian_filter

    from common.metrics import ssim_3dgs

    rng = np.random.default_rng(3)
    gt = rng.random((3, 24, 20))
    pred = np.clip(gt + 0.1 * rng.standard_normal(gt.shape), 0, 1)
    f = lambda a: np.stack([gaussian_filter(c, 1.5, mode="constant", cval=0.0, truncate=3.5) for c in a])  # noqa: E731
    mx, my = f(pred), f(gt)
    vx, vy, cxy = f(pred * pred) - mx**2, f(gt * gt) - my**2, f(pred * gt) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim_3dgs(pred, gt) == pytest.approx(ref, abs=1e-10)
    assert ssim_3dgs(gt, gt) == pytest.approx(1.0)
    assert abs(ssim_3dgs(pred, gt) - ssim(pred, gt)) > 1e-4  # the border windows differ


def test_psnr_masked_image_is_inflated_by_the_mask_fraction():
    from common.metrics import psnr_masked_image

    rng = np.random.default_rng(4)
    gt = rng.random((3, 16, 16))
    mask = np.zeros((16, 16), bool)
    mask[:, :4] = True  # a quarter of the image
    pred = gt.copy()
    pred[:, mask] = np.clip(pred[:, mask] + 0.05, 0, 1)
    inflated = psnr_masked_image(pred, gt, mask)
    assert inflated == pytest.approx(psnr(pred, gt, mask=mask) + 10 * np.log10(4), abs=1e-9)
