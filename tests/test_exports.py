"""Each package exports its public classes (`from ivgt import IVGT, Scene`), lazily: `import <pkg>`
loads none of the heavy libraries; the names load on first use."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["ivgt", "depthvlm", "endogsim", "ide3d", "vlm3", "g2vlm"]
REQUIRED = {  # at least these, whatever else __all__ lists
    "ivgt": ["IVGT", "Scene", "load_config"],
    "depthvlm": ["DepthVLMForConditionalGeneration", "DepthVLMProcessor", "load_pretrained", "load_config"],
    "endogsim": ["GaussianModel", "PhysicsScene", "Simulation", "load_config"],
    "ide3d": ["IDE3DForConditionalGeneration", "IDE3DProcessor", "load_pretrained", "load_config"],
    "vlm3": ["VLM3", "load_config"],
    "g2vlm": ["G2VLM", "G2VLMGeometry", "build_model", "load_config"],
}


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_listed_name_imports(pkg):
    module = importlib.import_module(pkg)
    assert set(REQUIRED[pkg]) <= set(module.__all__)
    for name in module.__all__:
        namespace = {}
        exec(f"from {pkg} import {name}", namespace)  # the user's spelling
        assert namespace[name] is getattr(module, name)
        assert getattr(namespace[name], "__module__", pkg).startswith(pkg), (name, namespace[name])
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        module.NoSuchName  # noqa: B018


def test_importing_a_package_loads_no_heavy_library():
    code = (f"import sys; import {', '.join(PACKAGES)}; "
            "print(sorted({'torch', 'transformers', 'diffusers', 'warp'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
