"""Flow of the 4DGS motion: a translating sheet of Gaussians gives its projected displacement."""

import torch

from common.cameras import make_K
from endogsim.flow import clip_flows, flow_from_motion, render_flow, texture
from endogsim.gaussians import GaussianModel

H, W, f = 24, 32, 40.0
K = make_K(f, f, W / 2, H / 2)
SMALL = dict(plane_resolution=(4, 4, 4, 4), multires=(1,), plane_features=4, mlp_width=8)


def sheet(z=1.0):
    """A dense sheet of opaque isotropic Gaussians at depth z covering the view."""
    ys, xs = torch.meshgrid(torch.linspace(-0.45, 0.45, 20), torch.linspace(-0.55, 0.55, 26), indexing="ij")
    means = torch.stack([xs, ys, torch.full_like(xs, z)], -1).reshape(-1, 3)  # [N, 3]
    n = len(means)
    return means, torch.tensor([1.0, 0, 0, 0]).repeat(n, 1), torch.full((n, 3), 0.03), torch.full((n,), 0.9)


def test_translating_gaussians_give_the_projected_displacement():
    means, quats, scales, opac = sheet(1.0)
    shift = torch.tensor([0.01, -0.005, 0.0])  # metres, parallel to the image plane at z = 1
    out = flow_from_motion(means, means + shift, quats, scales, opac, torch.eye(4), K, W, H)
    assert out.valid[4:-4, 4:-4].all()
    expected = torch.tensor([f * 0.01, -f * 0.005])  # du = f dx / z, dv = f dy / z
    torch.testing.assert_close(out.flow[out.valid], expected.expand(int(out.valid.sum()), 2), rtol=0, atol=1e-5)

    # a nearer sheet moving the same distance flows twice as far (1 / z), and a zero motion gives zero
    near = flow_from_motion(*(lambda m, q, s, o: (m, m + shift, q, s, o))(*sheet(0.5)), torch.eye(4), K, W, H)
    torch.testing.assert_close(near.flow[near.valid].mean(0), 2 * expected, rtol=1e-4, atol=1e-5)
    still = flow_from_motion(means, means, quats, scales, opac, torch.eye(4), K, W, H)
    assert still.flow.abs().max() == 0


def test_nothing_seen_is_invalid_and_motion_towards_the_camera_expands():
    means, quats, scales, opac = sheet(1.0)
    keep = means[:, 0] < 0  # the left half only
    out = flow_from_motion(means[keep], means[keep] * torch.tensor([1.0, 1.0, 0.9]), quats[keep], scales[keep],
                           opac[keep], torch.eye(4), K, W, H)
    assert not out.valid[:, -4:].any() and (out.flow[:, -4:] == 0).all()
    # moving towards the camera (z 1 -> 0.9) pushes every point away from the principal point
    u = torch.arange(W) + 0.5 - W / 2  # [W] pixel offset from the principal point
    left = out.valid & (u[None, :] < -2)
    assert (out.flow[..., 0][left] < 0).all()


def test_render_flow_follows_the_model_deformation():
    means, quats, scales, opac = sheet(1.0)
    model = GaussianModel(num_points=len(means), sh_degree=0, **SMALL)
    with torch.no_grad():
        model.means.copy_(means)
        model.log_scales.copy_(scales.log())
        model.opacity_logits.copy_(torch.logit(opac))
    # a deformation translating everything by 0.02 m per unit time along x
    base = model.deform

    def deform(t):
        g = dict(base(t))
        g["means"] = g["means"] + torch.tensor([0.02, 0.0, 0.0]) * float(t)
        return g

    model.deform = deform
    out = render_flow(model, 0.25, 0.75, torch.eye(4), K, W, H)
    torch.testing.assert_close(out.flow[out.valid][:, 0], torch.full((int(out.valid.sum()),), f * 0.01),
                               rtol=0, atol=1e-5)
    flows, valid = clip_flows(model, [0.0, 0.5, 1.0], torch.eye(4), K, W, H)
    assert flows.shape == (2, H, W, 2) and valid.shape == (2, H, W)
    torch.testing.assert_close(flows[valid][:, 0].mean(), torch.tensor(f * 0.01), rtol=0, atol=1e-5)


def test_texture_keeps_what_moves_with_the_tissue_and_drops_slow_shading_and_the_tool():
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    vessels = 0.5 + 0.2 * torch.sin(xs * 1.3) * torch.sin(ys * 1.1)  # [H, W] fine texture
    shading = 0.8 + 0.2 * torch.exp(-((xs - 40) ** 2 + (ys - 20) ** 2) / 400)  # a broad highlight
    keep = torch.ones(1, 48, 64)
    keep[0, :, :8] = 0  # a tool at the left border, bright
    img = torch.stack([vessels, shading * vessels + 0.1 * (shading - 1), vessels * 0 + 0.9], -1)[None]  # [1, H, W, 3]
    img[0, :, :8] = 1.0
    tex = texture(img, keep, 3.0)  # [1, H, W, 3]
    inner = (slice(None), slice(9, -9), slice(17, -9))  # beside the tool and away from the border
    assert (tex[..., 0] - tex[..., 1])[inner].abs().max() < 0.05  # the shaded channel: the same texture
    assert tex[..., 2][keep > 0].abs().max() < 1e-5  # a flat colour has no texture; the tool adds none beside it
    assert torch.equal(texture(img, keep, 0.0), img)
