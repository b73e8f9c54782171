"""EndoGSim: endoscopic 4D Gaussian splatting with an LLM-initialised, MPM-refined material field.

Implemented so far (see endogsim/README.md):
- `endogsim.physics`: a differentiable MLS-MPM in NVIDIA Warp with surgical interactions;
- `endogsim.render`: Gaussian rendering (gsplat on CUDA, a differentiable PyTorch compositor elsewhere);
- `endogsim.gaussians`: 4D Gaussians with a HexPlane deformation field, initialised from depth;
- `endogsim.material_prior`: per-object materials from a local image-text model, validated, with a
  literature-table fallback and per-value sources.
4DGS training, MPM refinement through the renderer, the simulate CLI and reproduce are not yet here.
"""
