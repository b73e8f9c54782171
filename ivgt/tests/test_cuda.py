import pytest
import torch

from ivgt.config import ModelConfig
from ivgt.model import IVGT


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    model = IVGT.from_model_config(ModelConfig()).eval()
    x = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to("cuda")(x.cuda())
    for key in ("depth", "features", "pose_enc"):
        assert torch.allclose(cpu[key], gpu[key].cpu(), atol=1e-3, rtol=1e-3), key
    pts = torch.rand(500, 3)
    s_gpu = model.scene_from_outputs(x.cuda(), gpu).sdf(pts.cuda()).cpu()
    s_cpu = model.cpu().scene_from_outputs(x, cpu).sdf(pts)
    assert torch.allclose(s_cpu, s_gpu, atol=1e-3)
