"""DepthVLM: dense metric depth from a VLM's language backbone, in the same forward pass as the
text (arXiv 2605.15876, code hanxunyu/DepthVLM), on transformers' Qwen3-VL. See README.md.

The public classes load on first use, so that `import depthvlm` stays cheap (no transformers):

    from depthvlm import DepthVLMForConditionalGeneration, load_pretrained
    model, processor = load_pretrained("results/depthvlm/run/stage2/final")
"""

_EXPORTS = {  # name -> module of the package that defines it
    "DepthVLMForConditionalGeneration": "model", "DepthVLMConfig": "model", "DepthVLMOutput": "model",
    "build_model": "model", "load_pretrained": "model", "save_pretrained": "model",
    "DepthVLMProcessor": "processing", "DPTDepthHead": "head", "DepthNet": "baselines",
    "Config": "config", "ModelConfig": "config", "DataConfig": "config", "TrainConfig": "config",
    "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"depthvlm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'depthvlm' has no attribute {name!r}")
