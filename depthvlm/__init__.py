"""DepthVLM: metric depth maps from a VLM's language backbone (arXiv 2605.15876).

Not implemented yet: `make reproduce-depthvlm` says so and exits non-zero.
"""
