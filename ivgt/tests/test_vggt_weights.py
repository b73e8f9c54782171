"""VGGT-1B's aggregator into IVGT's backbone, on a tiny checkpoint written in VGGT's key layout.

The official names are spelled out here from VGGT's modules (`Aggregator`: camera_token,
register_token, patch_embed = DINOv2 with registers, frame_blocks / global_blocks of
`Block(norm1, attn(qkv, q_norm, k_norm, proj), ls1.gamma, norm2, mlp(fc1, fc2), ls2.gamma)`),
independently of `ivgt/vggt_weights.py`, and every tensor is followed to the parameter it must land in.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from common.errors import CheckpointError
from ivgt.aggregator import RotaryEmbedding2D
from ivgt.config import ModelConfig, load_config
from ivgt.model import IVGT

# VGGT's structure shrunk: encoder_dim == dim, qk_norm, RoPE; DINOv2 and aggregator register
# counts differ on purpose (VGGT has 4 and 4) so that a mix-up shows.
TINY = dict(image_size=(32, 32), patch_size=8, encoder_dim=32, encoder_layers=2, encoder_heads=2, encoder_registers=2,
            dim=32, depth=2, heads=2, num_register_tokens=3, qk_norm=True, rope_freq=100.0, feature_dim=8,
            decoder_hidden=16, n_coarse=8, n_fine=8, up_sample_steps=1)
C, HEAD_DIM, MLP = 32, 16, 128


def official_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every `aggregator.*` tensor of a VGGT checkpoint at TINY's sizes, plus a few head tensors."""
    g = torch.Generator().manual_seed(seed)
    t = {}

    def add(name, *shape):
        t[name] = torch.randn(*shape, generator=g)

    def block(prefix, qk_norm):
        for norm in ("norm1", "norm2"):
            add(f"{prefix}.{norm}.weight", C)
            add(f"{prefix}.{norm}.bias", C)
        add(f"{prefix}.attn.qkv.weight", 3 * C, C)
        add(f"{prefix}.attn.qkv.bias", 3 * C)
        add(f"{prefix}.attn.proj.weight", C, C)
        add(f"{prefix}.attn.proj.bias", C)
        if qk_norm:
            for norm in ("q_norm", "k_norm"):
                add(f"{prefix}.attn.{norm}.weight", HEAD_DIM)
                add(f"{prefix}.attn.{norm}.bias", HEAD_DIM)
        add(f"{prefix}.ls1.gamma", C)
        add(f"{prefix}.ls2.gamma", C)
        add(f"{prefix}.mlp.fc1.weight", MLP, C)
        add(f"{prefix}.mlp.fc1.bias", MLP)
        add(f"{prefix}.mlp.fc2.weight", C, MLP)
        add(f"{prefix}.mlp.fc2.bias", C)

    add("aggregator.camera_token", 1, 2, 1, C)
    add("aggregator.register_token", 1, 2, 3, C)
    add("aggregator.patch_embed.cls_token", 1, 1, C)
    add("aggregator.patch_embed.pos_embed", 1, 1 + 16, C)
    add("aggregator.patch_embed.register_tokens", 1, 2, C)
    add("aggregator.patch_embed.mask_token", 1, C)
    add("aggregator.patch_embed.patch_embed.proj.weight", C, 3, 8, 8)
    add("aggregator.patch_embed.patch_embed.proj.bias", C)
    add("aggregator.patch_embed.norm.weight", C)
    add("aggregator.patch_embed.norm.bias", C)
    for i in range(2):
        block(f"aggregator.patch_embed.blocks.{i}", qk_norm=False)
        block(f"aggregator.frame_blocks.{i}", qk_norm=True)
        block(f"aggregator.global_blocks.{i}", qk_norm=True)
    add("camera_head.trunk.0.norm1.weight", 2 * C)  # the heads IVGT does not use
    add("depth_head.scratch.output_conv1.weight", 4, 8, 3, 3)
    add("track_head.fnet.norm.weight", 4)
    return t


def landed(model: IVGT, key: str) -> torch.Tensor:
    """The IVGT tensor an official aggregator key must have landed in (spelled out independently)."""
    sd = model.state_dict()
    name = key[len("aggregator."):]
    if name.startswith("patch_embed.blocks."):
        i, rest = name[len("patch_embed.blocks."):].split(".", 1)
        layer = f"aggregator.encoder.encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            p = rest.rsplit(".", 1)[1]
            return torch.cat([sd[f"{layer}attention.{q}.{p}"] for q in ("q_proj", "k_proj", "v_proj")])
        rest = rest.replace("attn.proj", "attention.o_proj").replace("ls1.gamma", "layer_scale1.lambda1")
        return sd[layer + rest.replace("ls2.gamma", "layer_scale2.lambda1")]
    emb = {"patch_embed.cls_token": "embeddings.cls_token", "patch_embed.pos_embed": "embeddings.position_embeddings",
           "patch_embed.register_tokens": "embeddings.register_tokens", "patch_embed.mask_token": "embeddings.mask_token",
           "patch_embed.patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "patch_embed.norm.weight": "layernorm.weight", "patch_embed.norm.bias": "layernorm.bias"}
    if name in emb:
        return sd["aggregator.encoder." + emb[name]]
    if name == "camera_token":
        return sd["aggregator.special"][None, :, :1]
    if name == "register_token":
        return sd["aggregator.special"][None, :, 1:]
    kind, i, rest = name.split(".", 2)
    rest = rest.replace("attn.", "").replace("ls1.gamma", "ls1").replace("ls2.gamma", "ls2")
    return sd[f"aggregator.{kind}.{i}." + rest.replace("mlp.fc1", "mlp.0").replace("mlp.fc2", "mlp.2")]


@pytest.fixture(scope="module")
def vggt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vggt") / "model.safetensors"
    save_file(official_tensors(), str(path))
    return path


def build(**kw) -> IVGT:
    torch.manual_seed(0)
    return IVGT.from_model_config(ModelConfig(**{**TINY, **kw})).eval()


def test_every_aggregator_tensor_lands_in_its_parameter(vggt_file, capsys):
    model = build(vggt_path=str(vggt_file))
    line = capsys.readouterr().err.strip()
    official = official_tensors()
    agg = [k for k in official if k.startswith("aggregator.")]
    assert f"VGGT aggregator loaded ({len(agg)} tensors)" in line and str(vggt_file) in line
    assert "camera_head (1 tensors), depth_head (1 tensors), track_head (1 tensors)" in line
    for key in agg:
        assert torch.equal(landed(model, key), official[key]), key
    sd = model.state_dict()
    assert torch.equal(sd["aggregator.proj.weight"], torch.eye(C)) and not sd["aggregator.proj.bias"].any()
    # everything outside the aggregator is the plain model's initialisation
    plain = build().state_dict()
    for k, v in sd.items():
        if not k.startswith("aggregator."):
            assert torch.equal(v, plain[k]), k
    # the loaded model runs, and its checkpoint loads without the VGGT file
    x = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out["depth"]).all()


def reference_aggregator(t: dict, images: torch.Tensor) -> torch.Tensor:
    """VGGT's aggregator forward on the official tensors, written from its description (DINOv2 with
    registers -> [camera, registers, patches] per frame, first frame's own tokens; frame then global
    blocks with query-key LayerNorm and 2D RoPE, special tokens at position 0, patches at 1 + (row,
    col)). The RoPE here rotates complex pairs (channel j with j + d/2 of each half), not by
    rotate-half. Returns the last frame-block and global-block outputs concatenated, [B, V, T, 2C]."""
    def ln(x, p, eps):
        return F.layer_norm(x, x.shape[-1:], t[p + ".weight"], t[p + ".bias"], eps)

    def rope(x, pos):  # x [B, h, N, d], pos [N, 2]
        out = []
        for half, coord in zip(x.chunk(2, -1), pos.unbind(-1)):
            d = half.shape[-1]
            theta = coord[:, None].double() * 100.0 ** (-torch.arange(0, d, 2).double() / d)  # [N, d/2]
            z = torch.complex(half[..., : d // 2].double(), half[..., d // 2:].double())
            z = z * torch.polar(torch.ones_like(theta), theta)
            out += [z.real.float(), z.imag.float()]
        return torch.cat(out, -1)

    def block(x, p, eps, pos=None):
        B, N, _ = x.shape
        q, k, v = F.linear(ln(x, p + ".norm1", eps), t[p + ".attn.qkv.weight"], t[p + ".attn.qkv.bias"]) \
            .reshape(B, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4)
        if pos is not None:
            q, k = rope(ln(q, p + ".attn.q_norm", 1e-5), pos), rope(ln(k, p + ".attn.k_norm", 1e-5), pos)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        x = x + t[p + ".ls1.gamma"] * F.linear(a, t[p + ".attn.proj.weight"], t[p + ".attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, p + ".norm2", eps), t[p + ".mlp.fc1.weight"], t[p + ".mlp.fc1.bias"]))
        return x + t[p + ".ls2.gamma"] * F.linear(h, t[p + ".mlp.fc2.weight"], t[p + ".mlp.fc2.bias"])

    t = {k[len("aggregator."):]: v for k, v in t.items() if k.startswith("aggregator.")}
    B, V = images.shape[:2]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = F.conv2d((images.flatten(0, 1) - mean) / std, t["patch_embed.patch_embed.proj.weight"],
                 t["patch_embed.patch_embed.proj.bias"], stride=8).flatten(2).transpose(1, 2)  # [BV, 16, C]
    x = torch.cat([t["patch_embed.cls_token"].expand(B * V, -1, -1), x], 1) + t["patch_embed.pos_embed"]
    x = torch.cat([x[:, :1], t["patch_embed.register_tokens"].expand(B * V, -1, -1), x[:, 1:]], 1)
    for i in range(2):
        x = block(x, f"patch_embed.blocks.{i}", 1e-6)
    patches = ln(x, "patch_embed.norm", 1e-6)[:, 1 + 2:]  # [BV, 16, C]
    first = torch.cat([t["camera_token"][0, 0], t["register_token"][0, 0]])  # [1 + 3, C]
    other = torch.cat([t["camera_token"][0, 1], t["register_token"][0, 1]])
    special = torch.stack([first] + [other] * (V - 1)).repeat(B, 1, 1)  # [BV, 4, C]
    tokens = torch.cat([special, patches], 1)  # [BV, T, C]
    T = tokens.shape[1]
    grid = torch.tensor([[r + 1, c + 1] for r in range(4) for c in range(4)])
    pos = torch.cat([torch.zeros(4, 2, dtype=torch.long), grid])  # [T, 2]
    for i in range(2):
        tokens = block(tokens, f"frame_blocks.{i}", 1e-5, pos)
        frame = tokens
        tokens = block(tokens.reshape(B, V * T, C), f"global_blocks.{i}", 1e-5, pos.repeat(V, 1)).reshape(B * V, T, C)
    return torch.cat([frame, tokens], -1).reshape(B, V, T, 2 * C)


def test_loaded_backbone_computes_vggts_aggregator(vggt_file):
    model = build(vggt_path=str(vggt_file))
    images = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.aggregator(images)
    ref = reference_aggregator(official_tensors(), images)
    assert ours.shape == ref.shape == (2, 3, 4 + 16, 2 * C)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()


def test_saved_model_reloads_without_the_vggt_file(vggt_file, tmp_path):
    model = build(vggt_path=str(vggt_file))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["vggt_path"] == str(vggt_file)
    moved = tmp_path / "elsewhere.safetensors"
    vggt_file.rename(moved)
    try:
        loaded = IVGT.load(tmp_path / "m")
    finally:
        moved.rename(vggt_file)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_folder_holding_model_safetensors_loads(vggt_file):
    model = build(vggt_path=str(vggt_file.parent))
    official = official_tensors()
    assert torch.equal(landed(model, "aggregator.global_blocks.1.attn.k_norm.bias"),
                       official["aggregator.global_blocks.1.attn.k_norm.bias"])


def _write(tmp_path, tensors, name="model.safetensors"):
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


def _error(**kw) -> str:
    with pytest.raises(CheckpointError) as info:
        build(**kw)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_missing_key_is_named_with_the_file(tmp_path):
    t = official_tensors()
    del t["aggregator.frame_blocks.1.attn.q_norm.weight"]
    path = _write(tmp_path, t)
    msg = _error(vggt_path=str(path))
    assert msg.startswith(f"{path}: no tensor 'aggregator.frame_blocks.1.attn.q_norm.weight'"), msg


def test_wrong_shape_is_named_with_both_shapes(tmp_path):
    t = official_tensors()
    t["aggregator.global_blocks.0.mlp.fc1.weight"] = torch.zeros(64, C)
    path = _write(tmp_path, t)
    msg = _error(vggt_path=str(path))
    expected = "'aggregator.global_blocks.0.mlp.fc1.weight' has shape [64, 32], this config expects [128, 32]"
    assert msg.startswith(f"{path}: {expected}"), msg


def test_another_depth_is_an_unexpected_key(vggt_file):
    msg = _error(vggt_path=str(vggt_file), depth=1)
    assert "unexpected tensor 'aggregator.frame_blocks.1." in msg and str(vggt_file) in msg


def test_config_without_qk_norm_is_refused(vggt_file):
    msg = _error(vggt_path=str(vggt_file), qk_norm=False)
    assert "model.qk_norm: False, VGGT's aggregator needs true" in msg


def test_pickles_are_refused_without_reading_them(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x02}q\x00.")  # a pickle: must never be unpickled
    assert "a pickled checkpoint (.pt) is not loaded (no torch.load)" in _error(vggt_path=str(pt))
    msg = _error(vggt_path=str(tmp_path))
    assert msg == f"{tmp_path}: no model.safetensors in the folder; found pickled weights ['model.pt'], which are " \
                  "not loaded (use facebook/VGGT-1B's model.safetensors)"
    with pytest.raises(CheckpointError, match="model.pt"):  # the config check says it before any work
        load_config("ivgt/configs/tiny.yaml", [f"model.vggt_path={pt}"])


def test_paper_config_expects_vggt_1b_shapes():
    from ivgt.vggt_weights import official_shapes

    cfg = load_config("ivgt/configs/paper.yaml").model
    with torch.device("meta"):
        model = IVGT.from_model_config(cfg)
    shapes = official_shapes(model)
    assert shapes["patch_embed.pos_embed"] == (1, 1370, 1024)  # 518 / 14 = 37, 37^2 + CLS
    assert shapes["register_token"] == (1, 2, 4, 1024) and shapes["patch_embed.register_tokens"] == (1, 4, 1024)
    assert shapes["frame_blocks.23.attn.q_norm.weight"] == (64,)
    # 24 DINOv2 blocks x 14 + 8 embedding / final-norm tensors + 2 x 24 aggregator blocks x 18 + 2 tokens
    assert len(shapes) == 24 * 14 + 8 + 48 * 18 + 2


def test_rope_depends_only_on_relative_positions_and_leaves_position_zero_alone():
    rope = RotaryEmbedding2D(100.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(pq, pk):
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum()

    assert torch.allclose(score((2, 5), (1, 3)), score((4, 7), (3, 5)), atol=1e-5)  # same offset (1, 2)
    assert not torch.allclose(score((2, 5), (1, 3)), score((2, 5), (3, 1)), atol=1e-3)
    assert torch.equal(rope(q, torch.zeros(1, 1, 2, dtype=torch.long)), q)
    # the first half of the channels follows the row, the second the column
    moved_row = rope(q, torch.tensor([[[3, 0]]]))
    assert torch.equal(moved_row[..., 4:], q[..., 4:]) and not torch.equal(moved_row[..., :4], q[..., :4])


def test_token_positions_special_tokens_at_zero_patches_row_major_from_one():
    model = build()
    pos = model.aggregator.token_positions(2, 3, "cpu")  # [1, 4 + 6, 2]
    assert pos.shape == (1, 10, 2) and not pos[0, :4].any()
    assert pos[0, 4:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]
