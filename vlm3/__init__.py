"""VLM3: a standard VLM learns depth, correspondence, camera pose and object-level 3D as text
(Cai et al., arXiv 2605.30561).

`transformers`' Qwen3-VL unchanged; focal-length unification, text pixel references and a task
mixture (see README.md). Modules: `prompts` (coordinates, templates, parser), `scenes` (stored views,
zoom and focal unification), `data` (questions from scenes), `model` (the VLM, tokenizer, label
masking), `train`, `evaluate`, `reproduce`, `scaling`, `demo`. Experiments and probes are in
`vlm3.diagnostics`, which none of these imports.

The public classes load on first use, so that `import vlm3` stays cheap (no transformers):

    from vlm3 import VLM3
    vlm = VLM3.from_pretrained("results/vlm3/run/checkpoint")
"""

_EXPORTS = {  # name -> module of the package that defines it
    "VLM3": "model", "QuestionBuilder": "data", "SceneCache": "scenes", "Example": "data",
    "ParseFailure": "prompts",
    "Config": "config", "ModelConfig": "config", "DataConfig": "config", "TrainConfig": "config",
    "EvalConfig": "config", "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"vlm3.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vlm3' has no attribute {name!r}")
