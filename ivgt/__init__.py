"""IVGT: implicit visual geometry transformer (arXiv 2605.16258): unposed images -> cameras,
depth and a queryable SDF + colour scene. See README.md."""
