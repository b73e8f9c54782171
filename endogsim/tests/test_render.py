"""The PyTorch Gaussian compositor: analytic footprint, depth order, gradients, gsplat parity."""

import math

import pytest
import torch

from common.cameras import make_K
from endogsim.render import render
from endogsim.tests.conftest import cuda_available

EYE = torch.eye(4, dtype=torch.float64)


def _one(mean, scale, opacity, color=(1.0, 1.0, 1.0), dtype=torch.float64):
    return dict(means=torch.tensor([mean], dtype=dtype), quats=torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
                scales=torch.full((1, 3), scale, dtype=dtype), opacities=torch.tensor([opacity], dtype=dtype),
                colors=torch.tensor([color], dtype=dtype))


def test_isotropic_gaussian_matches_analytic_footprint():
    # On the optical axis J = diag(f/z), so Sigma2d = ((f s / z)^2 + eps2d) I around (cx, cy).
    f, z, s, o = 40.0, 2.0, 0.1, 0.8
    K = make_K(f, f, 16.3, 15.7).double()
    out = render(**_one((0.0, 0.0, z), s, o), w2c=EYE, K=K, width=32, height=32, tile_size=8)
    var = (f * s / z) ** 2 + 0.3
    ys, xs = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
    expect = o * torch.exp(-((xs - 16.3) ** 2 + (ys - 15.7) ** 2) / (2 * var)).double()
    expect = torch.where(expect >= 1 / 255, expect, torch.zeros_like(expect))
    assert torch.allclose(out.alpha, expect, atol=1e-12)
    assert torch.allclose(out.rgb[..., 0], expect, atol=1e-12)  # white on black
    drawn = expect > 0
    assert torch.allclose(out.depth[drawn], torch.full_like(out.depth[drawn], z))
    assert (out.depth[~drawn] == 0).all() and drawn.sum() > 100


def test_off_axis_gaussian_is_centred_at_its_projection():
    K = make_K(50.0, 45.0, 24.0, 20.0).double()
    mean = (0.31, -0.17, 2.5)
    out = render(**_one(mean, 0.05, 0.9), w2c=EYE, K=K, width=48, height=40)
    ys, xs = torch.meshgrid(torch.arange(40.0) + 0.5, torch.arange(48.0) + 0.5, indexing="ij")
    w = out.alpha / out.alpha.sum()
    u, v = 50 * 0.31 / 2.5 + 24, 45 * -0.17 / 2.5 + 20
    assert abs((w * xs.double()).sum() - u) < 0.02 and abs((w * ys.double()).sum() - v) < 0.02


def test_two_gaussians_composite_front_to_back():
    K = make_K(40.0, 40.0, 16.0, 16.0).double()
    near, far = _one((0, 0, 2.0), 0.1, 0.6, (1, 0, 0)), _one((0, 0, 3.0), 0.15, 0.7, (0, 1, 0))
    # the far one listed first: the order must come from depth, not from the array
    g = {k: torch.cat([far[k], near[k]]) for k in near}
    out = render(**g, w2c=EYE, K=K, width=32, height=32, background=torch.tensor([0, 0, 1.0]).double())
    c = out.rgb[15, 15]  # pixel centre (15.5, 15.5): 0.5 px off both means
    a1 = 0.6 * math.exp(-0.25 / ((40 * 0.1 / 2) ** 2 + 0.3))
    a2 = 0.7 * math.exp(-0.25 / ((40 * 0.15 / 3) ** 2 + 0.3))
    T = (1 - a1) * (1 - a2)
    assert torch.allclose(c, torch.tensor([a1, (1 - a1) * a2, T], dtype=torch.float64), atol=1e-12)
    acc = a1 + (1 - a1) * a2
    assert abs(out.alpha[15, 15].item() - acc) < 1e-12
    assert abs(out.depth[15, 15].item() - (a1 * 2 + (1 - a1) * a2 * 3) / acc) < 1e-12


def test_gradcheck_all_gaussian_parameters():
    torch.manual_seed(0)
    K = make_K(12.0, 12.0, 4.0, 4.0).double()
    means = torch.tensor([[0.05, -0.1, 1.0], [-0.15, 0.1, 1.3], [0.1, 0.1, 1.6]], dtype=torch.float64)
    quats = torch.nn.functional.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    scales = torch.tensor([[0.08, 0.05, 0.06], [0.1, 0.07, 0.05], [0.06, 0.12, 0.08]], dtype=torch.float64)
    opac = torch.tensor([0.7, 0.5, 0.8], dtype=torch.float64)
    cols = torch.rand(3, 3, dtype=torch.float64)
    args = [x.clone().requires_grad_() for x in (means, quats, scales, opac, cols)]

    def f(m, q, s, o, c):
        out = render(m, q, s, o, c, EYE, K, 8, 8, tile_size=4)
        return torch.cat([out.rgb.flatten(), out.depth.flatten(), out.alpha.flatten()])

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-4)
    f(*args).sum().backward()
    assert all(a.grad.abs().sum() > 0 for a in args)


def test_tiles_do_not_change_the_image():
    torch.manual_seed(1)
    n = 200
    means = torch.rand(n, 3) * torch.tensor([1.0, 1.0, 1.0]) + torch.tensor([-0.5, -0.5, 1.5])
    g = dict(means=means, quats=torch.randn(n, 4), scales=torch.rand(n, 3) * 0.05 + 0.01,
             opacities=torch.rand(n) * 0.9 + 0.05, colors=torch.rand(n, 3))
    K = make_K(40.0, 40.0, 20.0, 15.0)
    a = render(**g, w2c=torch.eye(4), K=K, width=40, height=30, tile_size=64)
    b = render(**g, w2c=torch.eye(4), K=K, width=40, height=30, tile_size=7)
    assert torch.allclose(a.rgb, b.rgb, atol=1e-6) and torch.allclose(a.depth, b.depth, atol=1e-5)
    assert a.alpha.max() > 0.9


def test_bad_shapes_name_the_field():
    g = _one((0, 0, 1.0), 0.1, 0.5)
    g["scales"] = g["scales"][:, :2]
    with pytest.raises(ValueError, match="scales"):
        render(**g, w2c=EYE, K=make_K(10.0, 10.0, 4.0, 4.0).double(), width=8, height=8)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_torch_compositor_matches_gsplat_forward_and_backward():
    torch.manual_seed(0)
    n, dev = 500, "cuda"
    base = dict(means=torch.rand(n, 3) * 1.0 + torch.tensor([-0.5, -0.4, 1.5]), quats=torch.randn(n, 4),
                scales=torch.rand(n, 3) * 0.04 + 0.01, opacities=torch.rand(n) * 0.9 + 0.05,
                colors=torch.rand(n, 3))
    K, w2c = make_K(60.0, 60.0, 32.0, 24.0).to(dev), torch.eye(4, device=dev)
    outs, grads = [], []
    for backend in ("torch", "gsplat"):
        g = {k: v.to(dev).requires_grad_() for k, v in base.items()}
        o = render(**g, w2c=w2c, K=K, width=64, height=48, backend=backend)
        (o.rgb.square().sum() + 0.1 * (o.depth * o.alpha).sum() + o.alpha.sum()).backward()
        outs.append(o)
        grads.append({k: v.grad for k, v in g.items()})
    assert torch.allclose(outs[0].rgb, outs[1].rgb, atol=2e-4)
    assert torch.allclose(outs[0].alpha, outs[1].alpha, atol=2e-4)
    m = outs[0].alpha > 0.05
    assert torch.allclose(outs[0].depth[m], outs[1].depth[m], atol=2e-3)
    for k in base:
        ga, gb = grads[0][k], grads[1][k]
        assert (ga - gb).norm() / gb.norm() < 2e-2, k
