"""Optimizer state through safetensors: a restored AdamW continues exactly like the original."""

import torch

from common.checkpoint import load_optimizer_state, save_optimizer_state


def _model_and_opt(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _step(model, opt, x):
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()


def test_restored_adamw_takes_the_same_next_step(tmp_path):
    x = torch.randn(8, 4)
    a, opt_a = _model_and_opt(0)
    for _ in range(3):
        _step(a, opt_a, x)
    save_optimizer_state(opt_a, tmp_path / "optimizer.safetensors")
    b, opt_b = _model_and_opt(1)
    b.load_state_dict(a.state_dict())
    load_optimizer_state(opt_b, tmp_path / "optimizer.safetensors")
    fresh, opt_fresh = _model_and_opt(1)
    fresh.load_state_dict(a.state_dict())  # same weights, no Adam moments: a different next step
    for m, o in ((a, opt_a), (b, opt_b), (fresh, opt_fresh)):
        _step(m, o, x)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.allclose(p, q) for p, q in zip(a.parameters(), fresh.parameters()))
