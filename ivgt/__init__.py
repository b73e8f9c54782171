"""IVGT: implicit visual geometry transformer (arXiv 2605.16258): unposed images -> cameras,
depth and a queryable SDF + colour scene. See README.md.

The public classes load on first use, so that `import ivgt` stays cheap:

    from ivgt import IVGT, Scene
    model = IVGT.load("results/ivgt/run/model")
"""

_EXPORTS = {  # name -> module of the package that defines it
    "IVGT": "model", "Scene": "scene",
    "Config": "config", "ModelConfig": "config", "TrainConfig": "config", "load_config": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ivgt.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ivgt' has no attribute {name!r}")
