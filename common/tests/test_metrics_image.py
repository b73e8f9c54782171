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
