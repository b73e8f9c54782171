"""4D Gaussians: depth initialisation, identity deformation at start, a trainable field, save/load."""

import pytest
import torch

from common.cameras import make_K
from endogsim.gaussians import GaussianModel

H, W = 24, 32
SMALL = dict(plane_resolution=(8, 8, 8, 4), multires=(1, 2), plane_features=4, mlp_width=16)


@pytest.fixture(scope="module")
def frame():
    K = make_K(30.0, 30.0, 16.0, 12.0)
    ys, xs = torch.meshgrid(torch.arange(H) / H, torch.arange(W) / W, indexing="ij")
    depth = 0.1 + 0.01 * xs + 0.005 * torch.sin(3 * ys)  # [H, W] a tilted, curved tissue surface
    image = torch.stack([0.8 - 0.3 * ys, 0.3 + 0.2 * xs, 0.3 * torch.ones_like(xs)], -1)  # [H, W, 3]
    return image, depth, K


def test_from_depth_renders_the_frame_back(frame):
    image, depth, K = frame
    model = GaussianModel.from_depth(image, depth, K, torch.eye(4), stride=2, opacity=0.9, **SMALL)
    assert model.config.num_points == (H // 2) * (W // 2)
    with torch.no_grad():
        out = model.render(0.0, torch.eye(4), K, W, H)
    inner = (slice(2, -2), slice(2, -2))
    assert out.alpha[inner].min() > 0.95
    assert ((out.depth[inner] - depth[inner]).abs() / depth[inner]).max() < 0.03
    assert (out.rgb[inner] - image[inner]).abs().mean() < 0.03


def test_deformation_starts_as_identity_and_learns_a_motion(frame):
    image, depth, K = frame
    torch.manual_seed(0)
    model = GaussianModel.from_depth(image, depth, K, torch.eye(4), stride=4, **SMALL)
    g0 = model.deform(0.7)
    assert torch.equal(g0["means"], model.means) and torch.equal(g0["quats"], model.quats)
    shift = torch.tensor([0.0, 0.004, 0.0])

    def loss():  # move everything by `shift` at t = 1, stay at t = 0
        return ((model.deform(1.0)["means"] - model.means - shift) ** 2).sum() + \
            ((model.deform(0.0)["means"] - model.means) ** 2).sum()

    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.startswith(("grid", "mlp", "heads"))],
                           lr=1e-2)
    start = loss().item()
    for _ in range(100):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.1 * start


def test_save_pretrained_round_trip(frame, tmp_path):
    image, depth, K = frame
    torch.manual_seed(0)
    model = GaussianModel.from_depth(image, depth, K, torch.eye(4), stride=4, **SMALL)
    with torch.no_grad():  # non-trivial heads so the field matters
        for h in model.heads.values():
            h.weight.normal_(0, 0.01)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = GaussianModel.from_pretrained(tmp_path, use_safetensors=True)
    a, b = model.deform(0.3), loaded.deform(0.3)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [list(v) for v in loaded.config.aabb] == [list(v) for v in model.config.aabb]


def test_from_depth_rejects_an_empty_mask(frame):
    image, depth, K = frame
    with pytest.raises(ValueError, match="no pixel"):
        GaussianModel.from_depth(image, depth, K, torch.eye(4), mask=torch.zeros(H, W, dtype=torch.bool))
