"""The released DepthVLM checkpoint (DepthVLM-4B's layout) loads, on a tiny checkpoint written in it.

The official release is a Qwen3-VL folder (`model_type` qwen3_vl, `depth_head_type` "dpt") whose
weights add the official `DPTDepthHead` under `depth_head.`. Its names and shapes are spelled out
here from the official module structure (one shared `norm`, `projects`, `resize_layers`,
`scratch.layer{1-4}_rn`, `scratch.refinenet{1-4}` with `resConfUnit1/2` and `out_conv`,
`scratch.output_conv1/2`), independently of `official_key_map`, and the official head's forward
(its in-place ReLUs included) is recomputed from those tensors.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from common.errors import CheckpointError
from depthvlm.model import DepthVLMForConditionalGeneration, load_pretrained
from depthvlm.tests.conftest import small_model_config

DIM, FEAT, OUT = 32, 16, [8, 8, 16, 16]  # the text width and the head of small_model_config()
HEAD = {"features": FEAT, "out_channels": OUT}


def official_head_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """`depth_head.*` of the official DPT head at DIM / FEAT / OUT."""
    g = torch.Generator().manual_seed(seed)
    t = {}

    def add(name, *shape):
        t["depth_head." + name] = torch.randn(*shape, generator=g) * 0.2

    add("norm.weight", DIM)
    add("norm.bias", DIM)
    for i, c in enumerate(OUT):
        add(f"projects.{i}.weight", c, DIM, 1, 1)
        add(f"projects.{i}.bias", c)
        if i < 3:  # ConvTranspose2d(c, c, k, stride=k): weight [in, out, k, k]
            k = (8, 4, 2)[i]
            add(f"resize_layers.{i}.weight", c, c, k, k)
            add(f"resize_layers.{i}.bias", c)
        add(f"scratch.layer{i + 1}_rn.weight", FEAT, c, 3, 3)
    for n in (1, 2, 3, 4):
        add(f"scratch.refinenet{n}.out_conv.weight", FEAT, FEAT, 1, 1)
        add(f"scratch.refinenet{n}.out_conv.bias", FEAT)
        for unit in ((1, 2) if n < 4 else (2,)):
            for conv in (1, 2):
                add(f"scratch.refinenet{n}.resConfUnit{unit}.conv{conv}.weight", FEAT, FEAT, 3, 3)
                add(f"scratch.refinenet{n}.resConfUnit{unit}.conv{conv}.bias", FEAT)
    add("scratch.output_conv1.weight", FEAT // 2, FEAT, 3, 3)
    add("scratch.output_conv1.bias", FEAT // 2)
    add("scratch.output_conv2.0.weight", 32, FEAT // 2, 3, 3)
    add("scratch.output_conv2.0.bias", 32)
    add("scratch.output_conv2.2.weight", 1, 32, 1, 1)
    add("scratch.output_conv2.2.bias", 1)
    return t


def where_it_lands(key: str) -> list[str]:
    """Our head parameter(s) for an official head key (spelled out independently)."""
    name = key[len("depth_head."):]
    if name.startswith("norm."):
        return [f"depth_head.norms.{i}.{name[5:]}" for i in range(4)]
    name = name.replace("resize_layers.", "resize.").replace("scratch.output_conv", "output_conv")
    for n in (1, 2, 3, 4):
        name = name.replace(f"scratch.layer{n}_rn.", f"layer_rn.{n - 1}.")
        name = name.replace(f"scratch.refinenet{n}.", f"fusion.{n - 1}.")
    name = name.replace("resConfUnit1", "skip_unit").replace("resConfUnit2", "unit").replace("out_conv", "out")
    return ["depth_head." + name]


def reference_official_head(t: dict, maps: list[torch.Tensor], out_size) -> torch.Tensor:
    """The official head's forward on its own tensors: one shared LayerNorm; the residual units
    use nn.ReLU(inplace=True) on their input, so what they add back is relu(x)."""
    t = {k[len("depth_head."):]: v for k, v in t.items()}

    def conv(x, name, **kw):
        return F.conv2d(x, t[name + ".weight"], t.get(name + ".bias"), **kw)

    def unit(x, name):
        x = F.relu(x)  # in place in the official code: the skip below sees relu(x)
        return conv(F.relu(conv(x, name + ".conv1", padding=1)), name + ".conv2", padding=1) + x

    def fuse(n, x, skip=None, size=None):
        if skip is not None:
            x = x + unit(skip, f"scratch.refinenet{n}.resConfUnit1")
        x = unit(x, f"scratch.refinenet{n}.resConfUnit2")
        x = F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        return conv(x, f"scratch.refinenet{n}.out_conv")

    feats = []
    for i, m in enumerate(maps):  # m [h, w, C]
        x = F.layer_norm(m, m.shape[-1:], t["norm.weight"], t["norm.bias"]).permute(2, 0, 1)[None]
        x = conv(x, f"projects.{i}")
        if i < 3:
            x = F.conv_transpose2d(x, t[f"resize_layers.{i}.weight"], t[f"resize_layers.{i}.bias"], stride=(8, 4, 2)[i])
        feats.append(F.conv2d(x, t[f"scratch.layer{i + 1}_rn.weight"], padding=1))
    x = fuse(4, feats[3], size=feats[2].shape[-2:])
    x = fuse(3, x, feats[2], size=feats[1].shape[-2:])
    x = fuse(2, x, feats[1], size=feats[0].shape[-2:])
    x = conv(fuse(1, x, feats[0]), "scratch.output_conv1", padding=1)
    x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=True)
    x = conv(F.relu(conv(x, "scratch.output_conv2.0", padding=1)), "scratch.output_conv2.2")
    return F.softplus(x)[0, 0]


def write_release(tiny, folder, head=None, config_extra=None):
    """A Qwen3-VL folder with the official head's tensors added, as the DepthVLM release has."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    model, proc = tiny
    raw = model.config.to_dict()
    for k in ("model_type", "depth_head", "depth_loss_weight", "silog_lambda", "transformers_version", "architectures"):
        raw.pop(k, None)
    torch.manual_seed(1)
    qwen = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**raw, depth_head_type="dpt"))
    qwen.save_pretrained(folder)
    proc.save_pretrained(folder)
    weights = folder / "model.safetensors"
    save_file({**load_file(str(weights)), **(official_head_tensors() if head is None else head)}, str(weights),
              metadata={"format": "pt"})
    if config_extra:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **config_extra}))
    return qwen


def test_every_head_tensor_lands_and_the_head_computes_the_official_forward(tiny, tmp_path):
    qwen = write_release(tiny, tmp_path)
    model, _ = load_pretrained(tmp_path, head=HEAD)
    assert isinstance(model, DepthVLMForConditionalGeneration) and model.depth_head.fusion[0].unit.relu_skip
    sd, official = model.state_dict(), official_head_tensors()
    for key, value in official.items():
        for target in where_it_lands(key):
            assert torch.equal(sd[target], value), (key, target)
    assert sum(len(where_it_lands(k)) for k in official) == sum(k.startswith("depth_head.") for k in sd)
    for k, v in qwen.state_dict().items():  # the Qwen3-VL weights load unchanged
        assert torch.equal(sd[k], v), k
    g = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 3, DIM, generator=g) for _ in range(4)]
    with torch.no_grad():
        ours = model.depth_head(maps, (64, 96))
    ref = reference_official_head(official, maps, (64, 96))
    assert ours.shape == (64, 96) and torch.allclose(ours, ref, atol=1e-5, rtol=1e-4), (ours - ref).abs().max()


def test_a_sharded_release_loads(tiny, tmp_path):
    """Large releases come as model-0000i-of-0000n.safetensors + an index."""
    write_release(tiny, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    head = {k: v for k, v in tensors.items() if k.startswith("depth_head.")}
    rest = {k: v for k, v in tensors.items() if k not in head}
    files = {"model-00001-of-00002.safetensors": rest, "model-00002-of-00002.safetensors": head}
    for name, part in files.items():
        save_file(part, str(tmp_path / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, part in files.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model, _ = load_pretrained(tmp_path, head=HEAD)
    assert torch.equal(model.state_dict()["depth_head.norms.3.bias"], head["depth_head.norm.bias"])


def _error(folder, head=HEAD) -> str:
    with pytest.raises(CheckpointError) as info:
        load_pretrained(folder, head=head)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_missing_head_tensor_is_named_with_the_file(tiny, tmp_path):
    head = official_head_tensors()
    del head["depth_head.scratch.refinenet2.resConfUnit1.conv2.bias"]
    write_release(tiny, tmp_path, head=head)
    assert _error(tmp_path).startswith(f"{tmp_path / 'model.safetensors'}: no tensor "
                                       "'depth_head.scratch.refinenet2.resConfUnit1.conv2.bias' (1 of the 62")


def test_wrong_head_shape_is_named_with_both_shapes(tiny, tmp_path):
    write_release(tiny, tmp_path)
    msg = _error(tmp_path, head={"features": 8, "out_channels": OUT})  # a head config of another size
    assert msg.startswith(f"{tmp_path / 'model.safetensors'}: 'depth_head.") and "has shape" in msg
    assert "the head (depth_head config) expects" in msg


def test_another_head_kind_is_refused(tiny, tmp_path):
    """The official MLP ablation head (depth_head_type 'mlp') has other tensors: not mapped."""
    head = {"depth_head.mlp.0.weight": torch.zeros(4, DIM), **official_head_tensors()}
    write_release(tiny, tmp_path, head=head)
    assert "unexpected tensor 'depth_head.mlp.0.weight' (1 in all): not the official DPT depth head" in _error(tmp_path)
    write_release(tiny, tmp_path, config_extra={"depth_head_type": "mlp"})
    assert "depth_head_type 'mlp': only the official DPT head" in _error(tmp_path)


def test_a_stray_backbone_tensor_is_an_error(tiny, tmp_path):
    write_release(tiny, tmp_path, head={**official_head_tensors(), "model.language_model.extra.weight": torch.zeros(2)})
    msg = _error(tmp_path)
    assert msg.startswith(f"{tmp_path}: unexpected tensor 'model.language_model.extra.weight'"), msg


def test_tiny_head_default_keeps_the_x_skip():
    """tiny.yaml's head adds x back (its results were trained so); paper.yaml computes as the official head."""
    from depthvlm.config import load_config
    from depthvlm.model import head_kwargs

    assert head_kwargs(small_model_config())["relu_skip"] is False
    assert head_kwargs(load_config("depthvlm/configs/paper.yaml").model)["relu_skip"] is True
