import pytest
import torch

from depthvlm.config import ModelConfig

torch.set_num_threads(1)  # one thread for the tests (the entry points take torch's default or --threads)


def small_model_config() -> ModelConfig:
    return ModelConfig(vision_depth=3, vision_hidden=32, vision_heads=2, vision_mlp=64, patch_size=8, spatial_merge=2,
                       deepstack_layers=[0, 1, 2], text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=1,
                       text_mlp=64, head_features=16, head_out_channels=[8, 8, 16, 16])


@pytest.fixture
def tiny():
    from depthvlm.model import build_model

    return build_model(small_model_config(), seed=0)


@pytest.fixture(scope="session")
def scene_items():
    """Benchmark items of one indoor and one outdoor synthetic scene (2 views each, 64 px)."""
    from common.synthetic import generate_scene
    from depthvlm.data import to_vlm_items

    items = []
    for seed, domain in ((3, "indoor"), (4, "outdoor")):
        sample, _ = generate_scene(seed=seed, domain=domain, num_views=2, size=64)
        items += to_vlm_items(sample, focal=60.0, factor=16, max_size=64)
    return items
