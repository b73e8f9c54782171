import math

import numpy as np
import pytest
import torch

from common.metrics import align_lstsq, align_median, depth_metrics, silog


def test_hand_computed_three_pixels():
    pred = np.array([[1.0, 2.0, 4.0]])  # [H=1, W=3]
    gt = np.array([[1.0, 1.0, 2.0]])
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0 + 1 / 1 + 2 / 2) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 1 / 1 + 4 / 2) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    l2 = math.log(2)
    # log errors e = (0, ln 2, ln 2)
    assert m["rmse_log"] == pytest.approx(math.sqrt(2 * l2**2 / 3))
    assert m["silog"] == pytest.approx(100 * math.sqrt(2 * l2**2 / 3 - (2 * l2 / 3) ** 2))
    assert m["log10"] == pytest.approx(2 * math.log10(2) / 3)
    # ratios max(p/g, g/p) = (1, 2, 2) and 2 > 1.25^3 = 1.953125: only the first pixel passes
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(1 / 3)
    assert m["delta3"] == pytest.approx(1 / 3)


def test_delta_thresholds():
    gt = np.array([[1.0, 2.0, 1.0, 1.0]])
    pred = np.array([[1.2, 1.0 / 0.75, 1.9, 2.5]])  # ratios 1.2, 1.5, 1.9, 2.5
    m = depth_metrics(pred, gt)
    assert m["delta1"] == pytest.approx(1 / 4)  # 1.2 < 1.25
    assert m["delta2"] == pytest.approx(2 / 4)  # 1.5 < 1.5625
    assert m["delta3"] == pytest.approx(3 / 4)  # 1.9 < 1.953125


def test_validity_mask_min_max_depth_and_nonfinite_gt():
    pred = np.array([[1.0, 5.0, 9.0, 3.0, 7.0]])
    gt = np.array([[1.0, 0.0, np.nan, 100.0, 2.0]])  # only pixel 0 and 4 are valid with max 50
    mask = np.array([[True, True, True, True, True]])
    m = depth_metrics(pred, gt, mask=mask, max_depth=50.0)
    assert m["abs_rel"] == pytest.approx((0 + 5 / 2) / 2)
    mask[0, 4] = False
    assert depth_metrics(pred, gt, mask=mask, max_depth=50.0)["abs_rel"] == pytest.approx(0.0)


def test_pred_clamped_to_min_depth():
    pred = np.array([[0.0, -1.0]])
    gt = np.array([[1.0, 1.0]])
    m = depth_metrics(pred, gt, min_depth=0.5)
    assert m["abs_rel"] == pytest.approx(0.5)  # both predictions become 0.5
    assert math.isfinite(m["rmse_log"])


def test_pooled_vs_per_image():
    # image 0: 1 pixel with abs_rel 1; image 1: 3 pixels with abs_rel 0
    gt = np.ones((2, 2, 2))
    pred = np.ones((2, 2, 2))
    pred[0, 0, 0] = 2.0
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = True
    mask[1, :, :] = True
    mask[1, 0, 0] = False
    pooled = depth_metrics(pred, gt, mask=mask)
    per = depth_metrics(pred, gt, mask=mask, per_image=True)
    assert pooled["abs_rel"] == pytest.approx(1 / 4)
    assert per["abs_rel"] == pytest.approx((1 + 0) / 2)
    assert pooled["rmse"] == pytest.approx(math.sqrt(1 / 4))
    assert per["rmse"] == pytest.approx((1 + 0) / 2)


def test_median_alignment_per_image():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, size=(3, 8, 8))
    scales = np.array([0.5, 2.0, 7.0])
    pred = gt / scales[:, None, None]
    assert depth_metrics(pred, gt)["abs_rel"] > 0.4
    m = depth_metrics(pred, gt, align="median")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["delta1"] == 1.0
    # align_median on a whole sequence uses one scale: here medians 2 vs 4 -> s = 2
    out = align_median(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 9.0]), np.array([True, True, True]))
    np.testing.assert_allclose(out, [2.0, 4.0, 6.0])


def test_lstsq_alignment_recovers_scale_and_shift():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 5, size=(2, 6, 6))
    pred = (gt - 0.3) / 1.7
    np.testing.assert_allclose(align_lstsq(pred[0], gt[0]), gt[0], atol=1e-12)
    m = depth_metrics(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), align="lstsq")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    # hand case: pred (0, 1, 2) vs gt (1, 3, 5): gt = 2 pred + 1 exactly
    np.testing.assert_allclose(align_lstsq([0.0, 1.0, 2.0], [1.0, 3.0, 5.0], [True, True, True]), [1, 3, 5])


def test_silog_lambda_and_scale():
    pred = np.array([1.0, math.e])
    gt = np.array([1.0, 1.0])
    # e = (0, 1): mean e^2 = 0.5, mean e = 0.5
    assert silog(pred, gt) == pytest.approx(100 * math.sqrt(0.5 - 0.25))
    assert silog(pred, gt, lam=0.5, scale=1.0) == pytest.approx(math.sqrt(0.5 - 0.125))
    # scale invariance with lam = 1
    assert silog(3 * pred, gt) == pytest.approx(silog(pred, gt))


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="align"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), align="mean")
    with pytest.raises(ValueError, match="no valid"):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="pred: contains NaN"):
        depth_metrics(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match="mask"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="pred"):
        depth_metrics(np.ones(4), np.ones(4))


def test_align_median_even_pixel_count_numpy_and_torch():
    gt = np.array([1.0, 2.0, 4.0, 8.0])  # even count: numpy's median 3.0, torch's 2.0
    pred = np.array([1.0, 1.0, 1.0, 1.0])
    assert align_median(pred, gt)[0] == pytest.approx(3.0)
    assert align_median(pred, gt, median="torch")[0] == pytest.approx(float(torch.median(torch.tensor(gt))))
    odd = np.array([1.0, 2.0, 4.0])
    assert align_median(pred[:3], odd, median="torch")[0] == align_median(pred[:3], odd)[0] == 2.0
