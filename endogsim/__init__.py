"""EndoGSim: endoscopic 4D Gaussian splatting with an LLM-initialised, MPM-refined material field.

Implemented so far: the physics layer `endogsim.physics` (a differentiable MLS-MPM in NVIDIA Warp
with surgical interactions); see endogsim/README.md. The Gaussian and MLLM parts are not yet here.
"""
