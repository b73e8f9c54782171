"""EndoGSim: endoscopic 4D Gaussian splatting with an LLM-initialised, MPM-refined material field.

See endogsim/README.md. Modules: `physics` (differentiable MLS-MPM in NVIDIA Warp with surgical
interactions), `render` (gsplat on CUDA, a differentiable PyTorch compositor elsewhere),
`gaussians` / `train` / `evaluate` / `flow` (4DGS with a HexPlane deformation field),
`material_prior` (local image-text model or literature table), `scene` (decomposition into objects
and MPM particles), `refine` (materials through MPM + renderer), `simulate` (poke, cut, retract),
`synthetic_scene` (a clip with known materials) and `reproduce`.
"""
