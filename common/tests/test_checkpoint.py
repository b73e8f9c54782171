"""Optimizer state through safetensors: a restored AdamW continues exactly like the original.
Checkpoint folders: `checkpoint_to_resume` finds the complete one a kill leaves at any moment of an
`atomic_checkpoint` save (`checkpoint`, or `checkpoint.old` between the two renames)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    save_optimizer_state,
)
from common.errors import CheckpointError

FILES = ("optimizer.safetensors", "trainer_state.json")


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


def _write(folder, step):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"0.exp_avg": torch.full((2,), float(step))}, str(folder / "optimizer.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))


def _saved_step(folder):
    return json.loads((folder / "trainer_state.json").read_text())["step"]


def test_resume_from_the_checkpoint_when_it_is_complete(tmp_path):
    _write(tmp_path / "checkpoint", 4)
    _write(tmp_path / "checkpoint.old", 2)  # a save killed while removing it
    assert checkpoint_to_resume(tmp_path / "checkpoint", FILES) == tmp_path / "checkpoint"


def test_resume_from_old_when_a_save_was_killed_between_the_renames(tmp_path, capsys):
    _write(tmp_path / "checkpoint.old", 2)
    _write(tmp_path / "checkpoint.tmp", 4)  # complete, but the rename into place never happened
    assert checkpoint_to_resume(tmp_path / "checkpoint", FILES) == tmp_path / "checkpoint.old"
    assert "resuming from" in capsys.readouterr().err
    (tmp_path / "checkpoint").mkdir()  # incomplete: falls back to .old too
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{}")
    ck = checkpoint_to_resume(tmp_path / "checkpoint", FILES, missing_ok=True)
    assert ck == tmp_path / "checkpoint.old"


def test_only_tmp_is_an_error_naming_the_folder(tmp_path):
    _write(tmp_path / "checkpoint.tmp", 4)
    only_tmp = r"checkpoint: no checkpoint to resume from \(only checkpoint.tmp"
    with pytest.raises(CheckpointError, match=only_tmp):
        checkpoint_to_resume(tmp_path / "checkpoint", FILES)
    # a first save that never finished: a run that may start over does
    assert checkpoint_to_resume(tmp_path / "checkpoint", FILES, missing_ok=True) is None


def test_no_checkpoint_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from") as err:
        checkpoint_to_resume(tmp_path / "checkpoint", FILES)
    assert str(err.value).startswith(str(tmp_path / "checkpoint") + ":") and "\n" not in str(err.value)
    assert checkpoint_to_resume(tmp_path / "checkpoint", FILES, missing_ok=True) is None


def test_incomplete_checkpoints_are_an_error_even_with_missing_ok(tmp_path):
    _write(tmp_path / "checkpoint", 4)
    (tmp_path / "checkpoint" / "optimizer.safetensors").write_bytes(b"\x80\x04pickle")
    (tmp_path / "checkpoint.old").mkdir()
    both = "no complete checkpoint.*unreadable optimizer.*checkpoint.old has no"
    with pytest.raises(CheckpointError, match=both):
        checkpoint_to_resume(tmp_path / "checkpoint", FILES, missing_ok=True)


def test_atomic_save_replaces_the_checkpoint_and_leaves_no_siblings(tmp_path):
    ck = tmp_path / "run" / "checkpoint"
    for step in (2, 4):
        with atomic_checkpoint(ck) as tmp:
            assert tmp == tmp_path / "run" / "checkpoint.tmp" and not any(tmp.iterdir())
            _write(tmp, step)
    assert _saved_step(ck) == 4 and sorted(p.name for p in ck.parent.iterdir()) == ["checkpoint"]


def test_a_save_killed_after_a_resume_from_old_keeps_old(tmp_path):
    """Resumed from checkpoint.old (no checkpoint): a save that dies before its rename must not have
    removed checkpoint.old, the only complete checkpoint; one that finishes replaces it."""
    ck = tmp_path / "checkpoint"
    _write(tmp_path / "checkpoint.old", 2)
    with pytest.raises(RuntimeError), atomic_checkpoint(ck) as tmp:
        _write(tmp, 4)
        raise RuntimeError("killed")
    assert _saved_step(checkpoint_to_resume(ck, FILES)) == 2
    with atomic_checkpoint(ck) as tmp:
        _write(tmp, 4)
    assert _saved_step(checkpoint_to_resume(ck, FILES)) == 4 and not (tmp_path / "checkpoint.old").exists()
